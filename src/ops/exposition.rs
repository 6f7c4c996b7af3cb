//! The Prometheus text exposition format (version 0.0.4), written by hand:
//! a family is its `# HELP` and `# TYPE` lines followed by its samples, each
//! `name{label="value",…} number`. Label values are escaped (`\\`, `\"`,
//! `\n`), so a device path or client id can never break a line.
//!
//! Every component that has figures implements [`Collect`] and writes its own
//! families through [`Exposition::counter`] / [`Exposition::gauge`]; the
//! `/metrics` page is the concatenation of every section in the snapshot.

use std::collections::HashSet;
use std::fmt::Write;

/// Something with figures for `/metrics`. One section owns its families: a
/// family is written once, with all its samples, by one section.
pub trait Collect: Send {
    /// Writes this section's families.
    fn collect(&self, out: &mut Exposition);
}

/// A number in a sample: integers are written exactly, floats as Rust
/// prints them (`NaN` and infinities as the format spells them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// An exact integer.
    Int(u64),
    /// A float (e.g. seconds).
    Float(f64),
}

impl From<u64> for Number {
    fn from(n: u64) -> Self {
        Number::Int(n)
    }
}

impl From<usize> for Number {
    fn from(n: usize) -> Self {
        Number::Int(n as u64)
    }
}

impl From<bool> for Number {
    fn from(b: bool) -> Self {
        Number::Int(u64::from(b))
    }
}

impl From<f64> for Number {
    fn from(x: f64) -> Self {
        Number::Float(x)
    }
}

/// The text being built.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    families: HashSet<String>,
}

/// One family being written; add samples with [`Family::sample`].
pub struct Family<'a> {
    out: &'a mut Exposition,
    name: &'a str,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a counter family (`name` should end in `_total`).
    pub fn counter<'a>(&'a mut self, name: &'a str, help: &str) -> Family<'a> {
        self.family(name, help, "counter")
    }

    /// Starts a gauge family.
    pub fn gauge<'a>(&'a mut self, name: &'a str, help: &str) -> Family<'a> {
        self.family(name, help, "gauge")
    }

    fn family<'a>(&'a mut self, name: &'a str, help: &str, kind: &str) -> Family<'a> {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        // A second declaration of a family would make the page invalid: the
        // samples are still written, under the first declaration's lines.
        if self.families.insert(name.to_owned()) {
            let help = help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(self.text, "# HELP {name} {help}");
            let _ = writeln!(self.text, "# TYPE {name} {kind}");
        }
        Family { out: self, name }
    }

    /// The page.
    pub fn finish(self) -> String {
        self.text
    }
}

impl Family<'_> {
    /// Adds one sample with `labels` (name, value) pairs.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Number>) -> &mut Self {
        let text = &mut self.out.text;
        text.push_str(self.name);
        if !labels.is_empty() {
            text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(k);
                text.push_str("=\"");
                escape_label(text, v);
                text.push('"');
            }
            text.push('}');
        }
        text.push(' ');
        match value.into() {
            Number::Int(n) => {
                let _ = write!(text, "{n}");
            }
            Number::Float(x) if x.is_nan() => text.push_str("NaN"),
            Number::Float(x) if x.is_infinite() => {
                text.push_str(if x > 0.0 { "+Inf" } else { "-Inf" });
            }
            Number::Float(x) => {
                let _ = write!(text, "{x}");
            }
        }
        text.push('\n');
        self
    }

    /// Adds one sample without labels.
    pub fn value(&mut self, value: impl Into<Number>) -> &mut Self {
        self.sample(&[], value)
    }
}

fn escape_label(text: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            c => text.push(c),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut e = Exposition::new();
        e.counter("x_total", "Things.\nMore.")
            .sample(&[("a", "1"), ("b", "q\"\\\n")], 3u64)
            .value(4usize);
        e.gauge("y_seconds", "Time.").value(1.5).value(f64::NAN);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\\nMore.\n# TYPE x_total counter\n\
             x_total{a=\"1\",b=\"q\\\"\\\\\\n\"} 3\nx_total 4\n\
             # HELP y_seconds Time.\n# TYPE y_seconds gauge\ny_seconds 1.5\ny_seconds NaN\n"
        );
    }

    #[test]
    fn a_family_is_declared_once() {
        let mut e = Exposition::new();
        e.gauge("g", "G.").value(1u64);
        e.gauge("g", "G.").value(2u64);
        assert_eq!(e.finish().matches("# TYPE g gauge").count(), 1);
    }
}
