//! The MQTT-BASIC authentication method (draft §4.11, "MQTT User Name and
//! Password Support"): how a 2.0 client carries MQTT's user name and
//! password in the Authentication Data of its CONNECT. The data is a 2-byte
//! length and a UTF-8 user name, then a 2-byte length and the password
//! bytes, each exactly as long as its length says. It is a one-shot
//! exchange: the server answers with a CONNACK, never an AUTH, and a
//! successful CONNACK still names the method [MQTT-SN-4.11.1-5].

use alloc::{borrow::ToOwned, string::String};
use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// The Authentication Method string.
pub const METHOD: &str = "MQTT-BASIC";

/// A user name and password from MQTT-BASIC authentication data.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttBasic {
    /// The MQTT user name.
    pub user_name: String,
    /// The MQTT password (binary).
    pub password: Bytes,
}

impl core::fmt::Debug for MqttBasic {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MqttBasic")
            .field("user_name", &self.user_name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why authentication data is not valid MQTT-BASIC data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MqttBasicError {
    /// A length or a value runs past the end of the data.
    #[error("MQTT-BASIC data ends inside {0}")]
    Truncated(&'static str),
    /// Bytes after the password.
    #[error("MQTT-BASIC data has {0} bytes after the password")]
    TrailingBytes(usize),
    /// The user name is not a valid UTF-8 string (or contains U+0000).
    #[error("MQTT-BASIC user name is not a valid UTF-8 string")]
    InvalidUserName,
    /// A field longer than its 2-byte length can say (encoding only).
    #[error("MQTT-BASIC {0} longer than 65535 bytes")]
    TooLong(&'static str),
}

impl MqttBasic {
    /// Reads the Authentication Data of a CONNECT whose method is [`METHOD`].
    pub fn parse(data: &[u8]) -> Result<Self, MqttBasicError> {
        let (user, rest) = field(data, "User Name")?;
        let (password, rest) = field(rest, "Password")?;
        if !rest.is_empty() {
            return Err(MqttBasicError::TrailingBytes(rest.len()));
        }
        let user_name = match core::str::from_utf8(user) {
            Ok(s) if !s.contains('\0') => s.to_owned(),
            _ => return Err(MqttBasicError::InvalidUserName),
        };
        Ok(MqttBasic {
            user_name,
            password: Bytes::copy_from_slice(password),
        })
    }

    /// The Authentication Data for these credentials.
    pub fn to_data(&self) -> Result<Bytes, MqttBasicError> {
        let user = u16::try_from(self.user_name.len())
            .map_err(|_| MqttBasicError::TooLong("user name"))?;
        let password =
            u16::try_from(self.password.len()).map_err(|_| MqttBasicError::TooLong("password"))?;
        let mut out = BytesMut::with_capacity(4 + self.user_name.len() + self.password.len());
        out.put_u16(user);
        out.put_slice(self.user_name.as_bytes());
        out.put_u16(password);
        out.put_slice(&self.password);
        Ok(out.freeze())
    }
}

/// A 2-byte length and that many bytes; the rest after them.
fn field<'a>(buf: &'a [u8], name: &'static str) -> Result<(&'a [u8], &'a [u8]), MqttBasicError> {
    let Some((len, rest)) = buf.split_first_chunk::<2>() else {
        return Err(MqttBasicError::Truncated(name));
    };
    let n = usize::from(u16::from_be_bytes(*len));
    if rest.len() < n {
        return Err(MqttBasicError::Truncated(name));
    }
    Ok(rest.split_at(n))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn user_m_password_pw() {
        // §4.11's layout: 0001 'M' 0002 'P' 'W'.
        let data = [0x00, 0x01, b'M', 0x00, 0x02, b'P', b'W'];
        let basic = MqttBasic::parse(&data).unwrap();
        assert_eq!(basic.user_name, "M");
        assert_eq!(&basic.password[..], b"PW");
        assert_eq!(&basic.to_data().unwrap()[..], &data);
    }

    #[test]
    fn empty_user_and_password_are_valid() {
        let basic = MqttBasic::parse(&[0, 0, 0, 0]).unwrap();
        assert_eq!((basic.user_name.as_str(), basic.password.len()), ("", 0));
    }

    #[test]
    fn malformed_data_is_named() {
        assert_eq!(
            MqttBasic::parse(&[]),
            Err(MqttBasicError::Truncated("User Name"))
        );
        assert_eq!(
            MqttBasic::parse(&[0, 2, b'a']),
            Err(MqttBasicError::Truncated("User Name"))
        );
        assert_eq!(
            MqttBasic::parse(&[0, 1, b'a']),
            Err(MqttBasicError::Truncated("Password"))
        );
        assert_eq!(
            MqttBasic::parse(&[0, 1, b'a', 0, 1]),
            Err(MqttBasicError::Truncated("Password"))
        );
        assert_eq!(
            MqttBasic::parse(&[0, 0, 0, 1, b'p', 0xff]),
            Err(MqttBasicError::TrailingBytes(1))
        );
        assert_eq!(
            MqttBasic::parse(&[0, 1, 0xff, 0, 0]),
            Err(MqttBasicError::InvalidUserName)
        );
        assert_eq!(
            MqttBasic::parse(&[0, 1, 0x00, 0, 0]),
            Err(MqttBasicError::InvalidUserName)
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let basic = MqttBasic {
            user_name: "u".into(),
            password: Bytes::from_static(b"hunter2"),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
    }
}
