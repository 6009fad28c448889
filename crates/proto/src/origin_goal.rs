//! The operator's cost/speed dial setting for a release (issue 17): what
//! the origin optimises while devices download it. The seeder's
//! `origin_dial` turns it into an upload rate; the tracker stores it per
//! release (`POST /api/releases/{info_hash}/origin-goal`).
//!
//! In JSON and on the command line it is a string: `fastest`, `cheapest`
//! or `within:SECS`.

use std::str::FromStr;
use std::time::Duration;

/// What the operator wants for a release: cost or speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginGoal {
    /// No limit: every device as fast as the origin's uplink allows.
    Fastest,
    /// The floor rate only: about one origin copy, devices done when the
    /// swarm has spread it.
    Cheapest,
    /// Every device done within this long of its first announce, with the
    /// least origin egress the swarm's measured rates allow.
    CompleteWithin(Duration),
}

impl FromStr for OriginGoal {
    type Err = String;

    /// `fastest`, `cheapest`, or `within:SECS` (e.g. `within:120`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fastest" => Ok(OriginGoal::Fastest),
            "cheapest" => Ok(OriginGoal::Cheapest),
            _ => {
                let secs = s
                    .strip_prefix("within:")
                    .and_then(|n| n.trim_end_matches('s').parse::<u64>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        format!("origin goal {s:?}: expected fastest, cheapest or within:SECS (SECS > 0)")
                    })?;
                Ok(OriginGoal::CompleteWithin(Duration::from_secs(secs)))
            }
        }
    }
}

impl std::fmt::Display for OriginGoal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginGoal::Fastest => f.write_str("fastest"),
            OriginGoal::Cheapest => f.write_str("cheapest"),
            OriginGoal::CompleteWithin(d) => write!(f, "within:{}", d.as_secs()),
        }
    }
}

impl serde::Serialize for OriginGoal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for OriginGoal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_parse_and_print() {
        assert_eq!("fastest".parse(), Ok(OriginGoal::Fastest));
        assert_eq!("cheapest".parse(), Ok(OriginGoal::Cheapest));
        let within: OriginGoal = "within:90".parse().unwrap();
        assert_eq!(within, OriginGoal::CompleteWithin(Duration::from_secs(90)));
        assert_eq!(within.to_string(), "within:90");
        assert_eq!("within:90s".parse(), Ok(within));
        for bad in ["", "within:", "within:0", "within:-3", "slow"] {
            let e = bad.parse::<OriginGoal>().unwrap_err();
            assert!(e.contains("expected fastest"), "{bad}: {e}");
        }
    }

    #[test]
    fn goals_are_strings_in_json() {
        let g = OriginGoal::CompleteWithin(Duration::from_secs(600));
        assert_eq!(serde_json::to_string(&g).unwrap(), "\"within:600\"");
        assert_eq!(
            serde_json::from_str::<OriginGoal>("\"cheapest\"").unwrap(),
            OriginGoal::Cheapest
        );
        assert!(serde_json::from_str::<OriginGoal>("\"slowest\"").is_err());
    }
}
