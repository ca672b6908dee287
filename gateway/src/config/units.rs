//! Durations (`250ms`, `5s`, `1m`) and sizes (`64KiB`, `32MiB`, plain bytes) as users write them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written with a unit: `ms`, `s`, `m`, `h` (also `us`). Zero may be written `0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "0" {
            return Ok(Dur(Duration::ZERO));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("duration `{s}` has no unit; write e.g. `250ms`, `5s` or `1m`")
            })?;
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("duration `{s}` does not start with a number; write e.g. `5s`"))?;
        let mult = match unit.trim() {
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!(
                    "duration `{s}` has unknown unit `{other}`; use one of us, ms, s, m, h"
                ))
            }
        };
        let secs = n * mult;
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(format!("duration `{s}` is out of range"));
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else if self.0.as_micros() % 1000 == 0 {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}us", self.0.as_micros())
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, like `250ms`, `5s` or `1m`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                if v == 0 {
                    Ok(Dur(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "duration `{v}` has no unit; write e.g. `{v}s` or `{v}ms`"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                self.visit_u64(
                    u64::try_from(v).map_err(|_| E::custom("duration must not be negative"))?,
                )
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes: plain bytes, or with `B`, `KiB`, `MiB`, `GiB` (also `KB`/`MB`/`GB` = powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl Size {
    pub const fn kib(n: u64) -> Self {
        Size(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        Size(n * 1024 * 1024)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("size `{s}` does not start with a whole number; write e.g. `64KiB`")
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "Ki" => 1 << 10,
            "MiB" | "Mi" => 1 << 20,
            "GiB" | "Gi" => 1 << 30,
            "KB" | "kB" | "K" => 1000,
            "MB" | "M" => 1_000_000,
            "GB" | "G" => 1_000_000_000,
            other => {
                return Err(format!(
                    "size `{s}` has unknown unit `{other}`; use B, KiB, MiB or GiB"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Size)
            .ok_or_else(|| format!("size `{s}` is too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b != 0 && b % (1 << 30) == 0 {
            write!(f, "{}GiB", b >> 30)
        } else if b != 0 && b % (1 << 20) == 0 {
            write!(f, "{}MiB", b >> 20)
        } else if b != 0 && b % (1 << 10) == 0 {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}")
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like `64KiB`, `32MiB` or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("size must not be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            "250ms".parse::<Dur>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!("5s".parse::<Dur>().unwrap().0, Duration::from_secs(5));
        assert_eq!("1m".parse::<Dur>().unwrap().0, Duration::from_secs(60));
        assert_eq!(
            "1.5s".parse::<Dur>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert!("5".parse::<Dur>().unwrap_err().contains("no unit"));
        assert!("5x".parse::<Dur>().unwrap_err().contains("unknown unit"));
        assert_eq!(Dur::from_millis(1500).to_string(), "1500ms");
    }

    #[test]
    fn sizes() {
        assert_eq!("64KiB".parse::<Size>().unwrap().0, 65536);
        assert_eq!("10MiB".parse::<Size>().unwrap().0, 10 << 20);
        assert_eq!("123".parse::<Size>().unwrap().0, 123);
        assert!("12XB".parse::<Size>().is_err());
        assert_eq!(Size::mib(32).to_string(), "32MiB");
    }
}
