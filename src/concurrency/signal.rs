//! Named signals: the seed's user-defined signals (SignalContext), any number of them.
//!
//! A signal is a short name (plus an optional short argument) put into a processor's mailbox.
//! They arrive from the OS signal thread (`hup`, `usr1`, `usr2`), from `harmony ctl signal`,
//! and from the ground over the radio. Fixed capacity: delivering one never allocates.

use std::fmt;

use heapless::String as HString;

/// Longest signal name accepted.
pub const NAME_MAX: usize = 32;
/// Longest signal argument accepted.
pub const ARG_MAX: usize = 32;

/// Where a signal came from, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An operating-system signal (SIGHUP, SIGUSR1, ...).
    Os,
    /// The control socket (`harmony ctl`, `harmony top`).
    Control,
    /// A command from the ground station over the radio.
    Ground,
    /// Another processor in the tree.
    Internal,
}

/// A named signal with an optional argument.
#[derive(Clone, PartialEq, Eq)]
pub struct Signal {
    pub name: HString<NAME_MAX>,
    pub arg: HString<ARG_MAX>,
    pub origin: Origin,
}

/// Why a signal name or argument was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignalNameError {
    #[error("signal name is empty")]
    Empty,
    #[error("signal name longer than {NAME_MAX} bytes")]
    NameTooLong,
    #[error("signal argument longer than {ARG_MAX} bytes")]
    ArgTooLong,
    #[error("signal name may only contain a-z, 0-9, '-', '_' and '.'")]
    BadChar,
}

impl Signal {
    /// A signal with a validated name (lowercase ASCII letters, digits, `-`, `_`, `.`).
    pub fn new(name: &str, origin: Origin) -> Result<Self, SignalNameError> {
        Self::with_arg(name, "", origin)
    }

    pub fn with_arg(name: &str, arg: &str, origin: Origin) -> Result<Self, SignalNameError> {
        if name.is_empty() {
            return Err(SignalNameError::Empty);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            return Err(SignalNameError::BadChar);
        }
        let mut n = HString::new();
        n.push_str(name).map_err(|_| SignalNameError::NameTooLong)?;
        let mut a = HString::new();
        a.push_str(arg).map_err(|_| SignalNameError::ArgTooLong)?;
        Ok(Signal {
            name: n,
            arg: a,
            origin,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn arg(&self) -> &str {
        &self.arg
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.arg.is_empty() {
            write!(f, "Signal({} from {:?})", self.name, self.origin)
        } else {
            write!(
                f,
                "Signal({}={} from {:?})",
                self.name, self.arg, self.origin
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(Signal::new("rotate", Origin::Control).is_ok());
        assert_eq!(
            Signal::new("", Origin::Control),
            Err(SignalNameError::Empty)
        );
        assert_eq!(
            Signal::new("Rotate!", Origin::Control),
            Err(SignalNameError::BadChar)
        );
        assert_eq!(
            Signal::new(&"a".repeat(33), Origin::Control),
            Err(SignalNameError::NameTooLong)
        );
    }
}
