//! Release notices through an MQTT broker (MQTT 3.1.1, OASIS standard,
//! §4.7 topic names and filters; §3.3.1.3 retained messages): the topic
//! scheme the tracker publishes to and devices subscribe to, and the
//! notice's JSON body. Pure: no sockets.
//!
//! Topics are `{prefix}/releases/{channel}/{model}`. A release whose signed
//! manifest names channel `c` and models `m1, m2` is published to
//! `…/c/m1` and `…/c/m2`; one without a manifest channel uses the segment
//! [`ANY`] for the channel, one without models [`ANY`] for the model. A
//! device of channel `c` and model `m` subscribes to the four topics
//! [`device_topics`] gives (`c/m`, `c/*`, `*/m`, `*/*`), so it hears every
//! release whose audience can include it and no other. Each name is
//! percent-encoded into one topic level ([`topic_segment`]): `/`, `+`, `#`,
//! `*`, `%`, spaces and control characters never reach the broker raw, so
//! no name can address another level, be read as a wildcard, or collide
//! with [`ANY`].
//!
//! A notice is a hint, never an authority: anyone able to publish to the
//! broker could forge one. A device only ever acts on it by asking the
//! tracker for the release with its own token (which checks the audience
//! and the rollout wave) and by verifying the signed manifest against its
//! pinned key. The rollout percentage in the notice lets a device outside
//! the wave stay quiet instead of asking (see [`ReleaseNotice::wave_includes`]).

use serde::{Deserialize, Serialize};

use crate::ids::InfoHash;

/// Largest notice body accepted, in bytes (a notice is about 200).
pub const MAX_NOTICE_BYTES: usize = 4096;

/// The topic level that stands for "every channel" or "every model".
pub const ANY: &str = "*";

/// Default topic prefix.
pub const DEFAULT_PREFIX: &str = "ota";

/// The body of one release notice (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseNotice {
    /// The release to fetch from the tracker.
    pub info_hash: InfoHash,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its rollout percentage (0..=100) when the notice was published.
    pub rollout_percent: u8,
}

/// Why a notice or a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    /// The body is larger than [`MAX_NOTICE_BYTES`].
    #[error("release notice of {0} bytes (at most {MAX_NOTICE_BYTES})")]
    TooLarge(usize),
    /// The body is not a notice.
    #[error("not a release notice: {0}")]
    Malformed(String),
    /// The rollout percentage is above 100.
    #[error("release notice with rollout {0} % (at most 100)")]
    Percent(u8),
    /// The topic prefix cannot be used.
    #[error("MQTT topic prefix {0:?}: {1}")]
    Prefix(String, &'static str),
}

impl ReleaseNotice {
    /// The JSON body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a notice always serialises")
    }

    /// Parses a body received from the broker.
    ///
    /// Errors: [`NoticeError::TooLarge`] above [`MAX_NOTICE_BYTES`],
    /// [`NoticeError::Malformed`] for anything but a notice (unknown
    /// fields included), [`NoticeError::Percent`] above 100.
    pub fn decode(body: &[u8]) -> Result<Self, NoticeError> {
        if body.len() > MAX_NOTICE_BYTES {
            return Err(NoticeError::TooLarge(body.len()));
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            info_hash: InfoHash,
            name: String,
            version: String,
            rollout_percent: u8,
        }
        let w: Wire = serde_json::from_slice(body).map_err(|e| NoticeError::Malformed(e.to_string()))?;
        if w.rollout_percent > 100 {
            return Err(NoticeError::Percent(w.rollout_percent));
        }
        Ok(ReleaseNotice {
            info_hash: w.info_hash,
            name: w.name,
            version: w.version,
            rollout_percent: w.rollout_percent,
        })
    }

    /// Whether the wave the notice names includes `device_id`
    /// ([`crate::rollout::in_wave`]). Only a hint: the tracker decides.
    pub fn wave_includes(&self, device_id: &str) -> bool {
        crate::rollout::in_wave(&self.info_hash, device_id, self.rollout_percent)
    }
}

/// Checks a topic prefix: 1 to 64 bytes, no wildcard (`+`, `#`), no NUL,
/// no empty level (leading, trailing or doubled `/`).
///
/// Errors: [`NoticeError::Prefix`] with the reason.
pub fn check_prefix(prefix: &str) -> Result<(), NoticeError> {
    let bad = |why| Err(NoticeError::Prefix(prefix.into(), why));
    if prefix.is_empty() || prefix.len() > 64 {
        return bad("must be 1 to 64 bytes");
    }
    if prefix.contains(['+', '#', '\0']) {
        return bad("must not hold '+', '#' or NUL");
    }
    if prefix.split('/').any(str::is_empty) {
        return bad("must not have an empty level");
    }
    Ok(())
}

/// Characters of a name that are escaped in a topic level.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'/')
    .add(b'+')
    .add(b'#')
    .add(b'*')
    .add(b'%');

/// One channel or model name as one topic level: percent-encoded (RFC
/// 3986 §2.1 style, UTF-8) so that it holds no `/`, `+`, `#`, `*`, space
/// or control character; never equal to [`ANY`]; the empty name is `%`
/// (which no other name encodes to, since `%` itself becomes `%25`).
pub fn topic_segment(name: &str) -> String {
    let s = percent_encoding::utf8_percent_encode(name, ESCAPED).to_string();
    if s.is_empty() {
        // An empty level is legal MQTT but easy to misread; "%" alone
        // cannot come out of the encoding above.
        "%".into()
    } else {
        s
    }
}

/// The topics a release is published to: one per model (or [`ANY`]) under
/// its channel (or [`ANY`]). `prefix` must pass [`check_prefix`].
pub fn release_topics(prefix: &str, channel: Option<&str>, models: &[String]) -> Vec<String> {
    let c = channel.map_or_else(|| ANY.to_string(), topic_segment);
    if models.is_empty() {
        return vec![format!("{prefix}/releases/{c}/{ANY}")];
    }
    let mut t: Vec<String> = models
        .iter()
        .map(|m| format!("{prefix}/releases/{c}/{}", topic_segment(m)))
        .collect();
    t.sort();
    t.dedup();
    t
}

/// The four topics a device of `channel` and `model` subscribes to (QoS 1).
pub fn device_topics(prefix: &str, channel: &str, model: &str) -> [String; 4] {
    let (c, m) = (topic_segment(channel), topic_segment(model));
    [
        format!("{prefix}/releases/{c}/{m}"),
        format!("{prefix}/releases/{c}/{ANY}"),
        format!("{prefix}/releases/{ANY}/{m}"),
        format!("{prefix}/releases/{ANY}/{ANY}"),
    ]
}

/// Default MQTT port (plain TCP, IANA).
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// Where the broker is: `mqtt://[USER[:PASSWORD]@]HOST[:PORT]` (plain TCP;
/// port [`DEFAULT_MQTT_PORT`] when omitted). User name and password are
/// percent-decoded. [`std::fmt::Display`] never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// MQTT user name, if any.
    pub username: Option<String>,
    /// MQTT password, if any (only with a user name).
    pub password: Option<String>,
}

impl std::str::FromStr for BrokerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s).map_err(|e| format!("broker URL {s:?}: {e}"))?;
        if u.scheme() != "mqtt" {
            return Err(format!(
                "broker URL {s:?}: scheme must be mqtt:// (TLS, mqtts://, is not built in; put a TLS proxy beside the broker)"
            ));
        }
        if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
            return Err(format!("broker URL {s:?}: no path, query or fragment allowed"));
        }
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(format!("broker URL {s:?}: no host")),
        };
        let decode = |v: &str| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
        let username = Some(u.username()).filter(|n| !n.is_empty()).map(decode);
        let password = u.password().map(decode);
        if password.is_some() && username.is_none() {
            return Err(format!("broker URL {s:?}: a password needs a user name"));
        }
        Ok(BrokerAddr {
            host,
            port: u.port().unwrap_or(DEFAULT_MQTT_PORT),
            username,
            password,
        })
    }
}

impl std::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.username {
            Some(u) => write!(f, "mqtt://{u}@{host}:{}", self.port),
            None => write!(f, "mqtt://{host}:{}", self.port),
        }
    }
}

impl std::fmt::Debug for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerAddr({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(percent: u8) -> ReleaseNotice {
        ReleaseNotice {
            info_hash: InfoHash([7; 20]),
            name: "fw".into(),
            version: "2.0".into(),
            rollout_percent: percent,
        }
    }

    #[test]
    fn notice_round_trips_and_refuses_bad_bodies() {
        let n = notice(40);
        assert_eq!(ReleaseNotice::decode(&n.encode()).unwrap(), n);
        let big = vec![b' '; MAX_NOTICE_BYTES + 1];
        assert_eq!(
            ReleaseNotice::decode(&big),
            Err(NoticeError::TooLarge(MAX_NOTICE_BYTES + 1))
        );
        assert!(matches!(ReleaseNotice::decode(b"{}"), Err(NoticeError::Malformed(_))));
        let mut v: serde_json::Value = serde_json::from_slice(&n.encode()).unwrap();
        v["path"] = "/etc/passwd".into();
        assert!(matches!(
            ReleaseNotice::decode(v.to_string().as_bytes()),
            Err(NoticeError::Malformed(_))
        ));
        v = serde_json::from_slice(&n.encode()).unwrap();
        v["rollout_percent"] = 101.into();
        assert_eq!(
            ReleaseNotice::decode(v.to_string().as_bytes()),
            Err(NoticeError::Percent(101))
        );
        v["info_hash"] = "zz".into();
        assert!(ReleaseNotice::decode(v.to_string().as_bytes()).is_err());
    }

    #[test]
    fn wave_hint_follows_rollout_buckets() {
        let ids: Vec<String> = (0..200).map(|i| format!("dev-{i}")).collect();
        assert!(ids.iter().all(|d| notice(100).wave_includes(d)));
        assert!(!ids.iter().any(|d| notice(0).wave_includes(d)));
        let half = ids.iter().filter(|d| notice(50).wave_includes(d)).count();
        assert!((60..140).contains(&half), "{half} of 200 in a 50 % wave");
        for d in &ids {
            assert_eq!(
                notice(30).wave_includes(d),
                crate::rollout::in_wave(&InfoHash([7; 20]), d, 30)
            );
        }
    }

    #[test]
    fn names_stay_inside_one_level_and_never_read_as_wildcards() {
        for name in ["a/b", "+", "#", "*", "%2A", "sp ace", "x\u{0}y", "ü"] {
            let s = topic_segment(name);
            assert!(!s.contains(['/', '+', '#', '*', ' ', '\0']), "{name:?} -> {s:?}");
            assert_ne!(s, ANY);
        }
        assert_ne!(topic_segment("*"), topic_segment("%2A"), "escapes do not collide");
        assert_eq!(topic_segment("stable"), "stable");
        assert_eq!(topic_segment(""), "%");
    }

    #[test]
    fn a_device_hears_exactly_the_releases_whose_audience_can_hold_it() {
        let dev = device_topics("ota", "stable", "m1");
        let heard = |channel: Option<&str>, models: &[&str]| {
            let models: Vec<String> = models.iter().map(|m| m.to_string()).collect();
            release_topics("ota", channel, &models).iter().any(|t| dev.contains(t))
        };
        assert!(heard(Some("stable"), &["m1", "m2"]));
        assert!(heard(Some("stable"), &[]));
        assert!(heard(None, &["m1"]));
        assert!(heard(None, &[]));
        assert!(!heard(Some("beta"), &["m1"]));
        assert!(!heard(Some("stable"), &["m2"]));
        assert!(!heard(None, &["m2"]));
        assert_eq!(
            release_topics("ota", Some("stable"), &["b".into(), "a".into(), "a".into()]),
            ["ota/releases/stable/a", "ota/releases/stable/b"]
        );
    }

    #[test]
    fn prefixes_without_wildcards_or_empty_levels() {
        assert!(check_prefix("ota").is_ok());
        assert!(check_prefix("acme/ota").is_ok());
        for p in ["", "/ota", "ota/", "a//b", "ota/#", "ota/+", &"x".repeat(65)] {
            assert!(check_prefix(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn broker_urls_parse_and_hide_the_password() {
        let a: BrokerAddr = "mqtt://tracker:s%40cret@127.0.0.1:1884".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 1884));
        assert_eq!(a.username.as_deref(), Some("tracker"));
        assert_eq!(a.password.as_deref(), Some("s@cret"));
        assert_eq!(a.to_string(), "mqtt://tracker@127.0.0.1:1884");
        assert!(!format!("{a:?}").contains("cret"));
        let b: BrokerAddr = "mqtt://[::1]".parse().unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.username.as_deref()),
            ("::1", DEFAULT_MQTT_PORT, None)
        );
        assert_eq!(b.to_string(), "mqtt://[::1]:1883");
        for bad in [
            "mqtts://h",
            "http://h",
            "mqtt://",
            "mqtt://h/x",
            "mqtt://h?a=1",
            "mqtt://:p@h",
            "h:1883",
        ] {
            assert!(bad.parse::<BrokerAddr>().is_err(), "{bad}");
        }
    }
}
