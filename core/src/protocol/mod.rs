//! The enclave protocol: typed commands from the parent, typed replies from the enclave.
//!
//! Wire format: each message is a UTF-8 JSON object framed by [`crate::framing`].
//! Commands carry `"Operation"`; replies carry `"Status"`. Unknown fields are ignored both ways,
//! and a reader accepts compact and spaced JSON alike.

use std::fmt;

/// Declares a closed set of wire names as an enum with `ALL`, `as_str`, [`fmt::Display`] and
/// [`std::str::FromStr`], so that each name is spelled once and every reader (the enclave's
/// parser, the CLIs) and writer uses it.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$(Self::$variant),+];
            /// Every wire spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($wire),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::protocol::UnknownName;

            /// Parses the wire spelling, exactly.
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str() == text)
                    .ok_or($crate::protocol::UnknownName { expected: Self::NAMES })
            }
        }
    };
}

mod command;
mod error;
mod reply;
#[cfg(test)]
mod tests;

/// A name that is not one of a wire enum's spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownName {
    /// The spellings that would have been accepted.
    pub expected: &'static [&'static str],
}

impl UnknownName {
    /// The accepted spellings as a phrase: `A, B or C`.
    pub fn choices(&self) -> String {
        match self.expected {
            [] => String::new(),
            [only] => (*only).to_owned(),
            [init @ .., last] => format!("{} or {last}", init.join(", ")),
        }
    }
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}", self.choices())
    }
}

impl std::error::Error for UnknownName {}

pub use command::{
    Command, CommandArgs, DataKeySize, Decrypt, DeriveSharedSecret, EncryptionAlgorithm,
    EncryptionContext, GenerateDataKey, GenerateDataKeyPair, GenerateRandom, KeyAgreementAlgorithm,
    KeySpec, MAX_CIPHERTEXT_BYTES, MAX_GRANT_TOKENS, MAX_KEY_ID_CHARS, MAX_NUMBER_OF_BYTES,
    MAX_PUBLIC_KEY_BYTES, Operation, Rejected, SetClient, parse_command, parse_key_spec_arg,
};
pub use error::{CommandError, ErrorKind};
pub use reply::{Reply, ReplyError, Status};
