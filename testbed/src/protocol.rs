//! Wire protocol between the host and the guest exec daemon (`testbed-guest`).
//!
//! One JSON object per line in each direction over a virtio-serial port. Every request carries an
//! id that its response echoes, so requests may overlap: the daemon answers each one from its own
//! thread, in whatever order they finish. Byte payloads are base64 because command output and
//! files need not be UTF-8.

use serde::{Deserialize, Serialize};

/// Name of the virtio-serial port (`-device virtserialport,name=...`); the guest finds its device
/// node through `/sys/class/virtio-ports/*/name`.
pub const PORT_NAME: &str = "testbed.ctl";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Liveness check; used by the host to learn that the guest finished booting.
    Ping,
    /// Run `sh -c cmd`, feeding `stdin`, killing its process group after `timeout_ms`.
    Exec {
        cmd: String,
        #[serde(with = "b64_opt", default)]
        stdin: Option<Vec<u8>>,
        timeout_ms: u64,
    },
    /// Start `sh -c cmd` in the background in its own process group, output appended to `log_path`.
    Spawn {
        cmd: String,
        log_path: String,
    },
    /// Send `signal` to `pid` (to its whole process group when the daemon spawned it).
    Kill {
        pid: u32,
        signal: i32,
    },
    /// Exit status of a process started with `Spawn`, if it has exited.
    Status {
        pid: u32,
    },
    /// Write a file (parent directories are created).
    WriteFile {
        path: String,
        #[serde(with = "b64")]
        data: Vec<u8>,
        mode: u32,
    },
    ReadFile {
        path: String,
    },
    /// Sync and power off; the reply is sent before the power goes.
    Poweroff,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub id: u64,
    #[serde(flatten)]
    pub reply: Reply,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Pong {
        hostname: String,
    },
    Exec {
        /// Exit code, `None` when killed by a signal.
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        #[serde(with = "b64")]
        stdout: Vec<u8>,
        #[serde(with = "b64")]
        stderr: Vec<u8>,
    },
    Spawned {
        pid: u32,
    },
    Status {
        running: bool,
        code: Option<i32>,
        signal: Option<i32>,
    },
    File {
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    Done,
    Error {
        message: String,
    },
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let req = Request {
            id: 7,
            op: Op::Exec {
                cmd: "echo hi".into(),
                stdin: Some(vec![0, 255, 10]),
                timeout_ms: 1000,
            },
        };
        let line = serde_json::to_string(&req).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);

        let resp = Response {
            id: 7,
            reply: Reply::Exec {
                code: Some(0),
                signal: None,
                timed_out: false,
                stdout: b"hi\n".to_vec(),
                stderr: vec![],
            },
        };
        let line = serde_json::to_string(&resp).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), resp);

        let ping: Request = serde_json::from_str(r#"{"id":1,"op":"ping"}"#).unwrap();
        assert_eq!(ping.op, Op::Ping);
    }
}
