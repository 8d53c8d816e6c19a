//! Limits of the listening sockets (manager, link, mirror, HEP, IPFIX): voxtap's own keys, beside VoIPmonitor's.
//! Every listener reads the same limits; docs/security.md says what each one bounds and why the defaults are
//! what they are.

use super::parse::Entry;
use super::ConfigError;

#[derive(Debug, Clone, serde::Serialize)]
pub struct NetLimits {
    /// Connections of one listener that have not proven who they are yet (link handshake, the first request of a
    /// manager client, the greeting of a mirror sender, the first message of a HEP/IPFIX stream).
    pub preauth_max: u32,
    /// Connections of one listener past that point.
    pub conn_max: u32,
    /// Connections of one listener from one address, in either state.
    pub per_ip_max: u32,
    /// Whole handshake (or first request) of a connection, however the bytes trickle in.
    pub handshake_timeout_s: u32,
    /// An established stream that says nothing for this long is closed (link peers ping every 5 s).
    pub idle_timeout_s: u32,
    /// Failed authentications from one address within a minute before it is refused for a minute.
    pub auth_failures_max: u32,
    /// Secrets of single remote sensors (`ID:SECRET`), beside the shared `server_password`: a remote holding one
    /// can be no other sensor.
    #[serde(skip)]
    pub sensor_passwords: Vec<(u16, String)>,
    /// Largest frame a mirror/link/manager peer may send before it has authenticated, in bytes.
    pub preauth_frame_max: u32,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            preauth_max: 256,
            conn_max: 1024,
            per_ip_max: 64,
            handshake_timeout_s: 10,
            idle_timeout_s: 300,
            auth_failures_max: 10,
            sensor_passwords: Vec::new(),
            preauth_frame_max: 4096,
        }
    }
}

pub const KEYS: &[&str] = &[
    "net_preauth_max",
    "net_conn_max",
    "net_per_ip_max",
    "net_handshake_timeout_s",
    "net_idle_timeout_s",
    "net_auth_failures_max",
    "server_sensor_password",
];

/// Keys that may repeat (each adds one entry).
pub const LIST_KEYS: &[&str] = &["server_sensor_password"];

impl NetLimits {
    pub fn set(&mut self, e: &Entry, first: bool) -> Result<(), ConfigError> {
        let n = |min, max| super::number(e, min, max);
        match e.key.as_str() {
            "net_preauth_max" => self.preauth_max = n(1, 1_000_000)?,
            "net_conn_max" => self.conn_max = n(1, 1_000_000)?,
            "net_per_ip_max" => self.per_ip_max = n(1, 1_000_000)?,
            "net_handshake_timeout_s" => self.handshake_timeout_s = n(1, 3600)?,
            "net_idle_timeout_s" => self.idle_timeout_s = n(10, 86_400)?,
            "net_auth_failures_max" => self.auth_failures_max = n(1, 1_000_000)?,
            "server_sensor_password" => {
                if first {
                    self.sensor_passwords.clear();
                }
                let (id, secret) = e.value.split_once(':').ok_or_else(|| {
                    super::bad(e, "expected ID:SECRET (the remote's id_sensor, then its secret)".into())
                })?;
                let id: u16 = id.trim().parse().map_err(|_| super::bad(e, format!("'{id}' is not an id_sensor")))?;
                if secret.is_empty() {
                    return Err(super::bad(e, "the secret is empty".into()));
                }
                self.sensor_passwords.retain(|(i, _)| *i != id);
                self.sensor_passwords.push((id, secret.to_string()));
            }
            _ => {}
        }
        Ok(())
    }

    /// The secret a remote with `id` must prove: its own when it has one, else the shared `server_password`.
    /// `None` when it may not connect: sensors have secrets of their own and the shared one is empty (only the
    /// listed sensors are let in; an empty secret would let anyone in as an unlisted one).
    pub fn password_for<'a>(&'a self, id: Option<u16>, shared: &'a str) -> Option<&'a str> {
        match id.and_then(|i| self.sensor_passwords.iter().find(|(s, _)| *s == i)) {
            Some((_, p)) => Some(p.as_str()),
            None if shared.is_empty() && !self.sensor_passwords.is_empty() => None,
            None => Some(shared),
        }
    }
}
