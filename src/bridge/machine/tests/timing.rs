//! Time: the reconnect backoff (jittered, doubling, capped, reset by a
//! CONNACK) and the shutdown deadline.

use super::*;

/// The backoff the machine chose after a failure, relative to now.
fn backoff(h: &Harness) -> Duration {
    assert!(h.m.backing_off());
    let at = h.m.poll_timeout().expect("a timeout while backing off");
    at - h.now
}

#[test]
fn failures_back_off_doubling_up_to_the_maximum_and_a_connack_resets_it() {
    let mut h = Harness::shared(config());
    // Nominal 1, 2, 4, 8, 8 s; each drawn from [nominal / 2, nominal].
    for nominal in [1, 2, 4, 8, 8] {
        h.lose();
        let d = backoff(&h);
        let n = Duration::from_secs(nominal);
        assert!(d >= n / 2 && d <= n, "{d:?} within [{:?}, {n:?}]", n / 2);
        // Not over before its time.
        h.advance(d / 2);
        assert!(h.m.backing_off());
        h.advance(d - d / 2);
        assert!(!h.m.backing_off(), "over at its time");
        assert_eq!(h.m.poll_timeout(), None);
    }
    h.connack(false);
    h.lose();
    let d = backoff(&h);
    assert!(d <= Duration::from_secs(1), "back to the minimum: {d:?}");
}

#[test]
fn shutdown_waits_for_the_outbox_until_the_deadline() {
    let mut h = Harness::shared(config());
    h.command(publish("t", "1", 1));
    assert!(h.m.takes_commands());
    h.m.handle_shutdown(h.now, Duration::from_secs(5));
    h.drain();
    assert!(!h.m.takes_commands());
    assert!(!h.m.should_stop(), "something left to deliver");
    assert_eq!(h.m.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    h.advance(Duration::from_secs(4));
    assert!(!h.m.should_stop());
    h.advance(Duration::from_secs(1));
    assert!(h.m.should_stop(), "the deadline passed");
}

#[test]
fn shutdown_stops_once_the_outbox_has_drained() {
    let mut h = Harness::shared(config());
    h.connack(false);
    h.command(publish("t", "1", 1));
    h.m.handle_shutdown(h.now, Duration::from_secs(5));
    h.drain();
    assert!(!h.m.should_stop());
    h.written(&[1]);
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    assert!(h.m.should_stop());
}

#[test]
fn no_backoff_when_shutting_down_with_nothing_left() {
    let mut h = Harness::shared(config());
    h.connack(false);
    h.m.handle_shutdown(h.now, Duration::from_secs(5));
    h.lose();
    assert!(!h.m.backing_off());
    assert!(h.m.should_stop());
}

#[test]
fn a_closed_command_channel_stops_at_once() {
    let mut h = Harness::shared(config());
    h.command(publish("t", "1", 1));
    h.m.handle_closed(h.now);
    assert!(h.m.should_stop());
}
