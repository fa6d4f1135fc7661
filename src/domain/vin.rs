//! Vehicle identification numbers (ISO 3779): the id of the Vehicle and Consent streams.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string is not a VIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VinError {
    /// A VIN is exactly 17 characters.
    #[error("a VIN has 17 characters, this one has {0}")]
    Length(usize),
    /// Only 0-9 and A-Z without I, O and Q.
    #[error("'{0}' is not allowed in a VIN (digits and capital letters except I, O, Q)")]
    Character(char),
    /// Position 9 does not match the weighted check digit.
    #[error("check digit '{found}' does not match the computed '{expected}'")]
    CheckDigit {
        /// The character at position 9.
        found: char,
        /// The check digit the other 16 characters give.
        expected: char,
    },
}

/// A validated VIN. The check digit (position 9) is verified where it is mandatory:
/// North America (WMI starting 1-5) and China (L).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Vin(String);

/// The characters of a VIN (ISO 3779: 17 of 0-9 and A-Z without I, O, Q), as a regular
/// expression; the check digit of North American VINs is checked apart.
pub const PATTERN: &str = "^[A-HJ-NPR-Z0-9]{17}$";

impl Vin {
    /// Validates `raw` (case-sensitive: VINs are written in capitals).
    pub fn parse(raw: &str) -> Result<Self, VinError> {
        let count = raw.chars().count();
        if count != 17 {
            return Err(VinError::Length(count));
        }
        if let Some(bad) =
            raw.chars().find(|c| !(c.is_ascii_digit() || c.is_ascii_uppercase()) || matches!(c, 'I' | 'O' | 'Q'))
        {
            return Err(VinError::Character(bad));
        }
        let bytes = raw.as_bytes();
        if matches!(bytes[0], b'1'..=b'5' | b'L') {
            let expected = check_digit(bytes);
            let found = bytes[8] as char;
            if found != expected {
                return Err(VinError::CheckDigit { found, expected });
            }
        }
        Ok(Self(raw.to_owned()))
    }

    /// The VIN as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn transliterate(c: u8) -> u32 {
    match c {
        b'0'..=b'9' => u32::from(c - b'0'),
        b'A'..=b'H' => u32::from(c - b'A' + 1),
        b'J'..=b'R' => u32::from(c - b'J' + 1),
        b'S'..=b'Z' => u32::from(c - b'S' + 2),
        _ => 0,
    }
}

fn check_digit(vin: &[u8]) -> char {
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    let sum: u32 = vin.iter().zip(WEIGHTS).map(|(c, w)| transliterate(*c) * w).sum();
    match sum % 11 {
        10 => 'X',
        d => char::from_digit(d, 10).expect("a remainder of 11 below 10 is one digit"),
    }
}

impl TryFrom<String> for Vin {
    type Error = VinError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Vin> for String {
    fn from(vin: Vin) -> Self {
        vin.0
    }
}

impl fmt::Display for Vin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_north_american_vin_with_a_correct_check_digit_is_accepted() {
        assert!(Vin::parse("1HGCM82633A004352").is_ok());
        assert!(Vin::parse("1M8GDM9AXKP042788").is_ok());
    }

    #[test]
    fn a_north_american_vin_with_a_wrong_check_digit_is_refused() {
        assert_eq!(Vin::parse("1HGCM82643A004352"), Err(VinError::CheckDigit { found: '4', expected: '3' }));
    }

    #[test]
    fn a_european_vin_needs_no_check_digit() {
        assert!(Vin::parse("WVWZZZ1JZXW000001").is_ok());
    }

    #[test]
    fn letters_i_o_q_and_lowercase_are_refused() {
        assert_eq!(Vin::parse("WVWZZZ1JZXW00000O"), Err(VinError::Character('O')));
        assert_eq!(Vin::parse("WVWZZZ1JZXW00000I"), Err(VinError::Character('I')));
        assert_eq!(Vin::parse("wVWZZZ1JZXW000001"), Err(VinError::Character('w')));
    }

    #[test]
    fn wrong_lengths_are_refused() {
        assert_eq!(Vin::parse("1HGCM8263"), Err(VinError::Length(9)));
        assert_eq!(Vin::parse(""), Err(VinError::Length(0)));
    }
}
