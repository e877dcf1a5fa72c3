//! What travels between an agent and the console, encoded with postcard.
//!
//! Frames keep the protocol's own [`Envelope`]; each names the instance it is from or for by
//! service, replica and the agent's generation, so that a frame for an instance that has
//! since been replaced is never delivered to its successor.

use serde::{Deserialize, Serialize};
use switchboard_protocol::{Envelope, segment::Snapshot};

use crate::registry::{InstanceState, JobRun};

/// One instance of a remote host, as its agent numbers it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceKey {
    pub service: String,
    pub replica: u32,
    /// The run of the agent (see [`HostStatus::boot`]): generations start over with each.
    pub boot: u64,
    /// The agent's generation: grows with every spawn on that agent.
    pub generation: u64,
}

/// Agent to console (`…HOST.up`), as the console reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum Up {
    /// A frame the instance wrote on its stdout.
    Frame {
        key: InstanceKey,
        envelope: Envelope,
    },
    /// The instance has exited.
    Gone { key: InstanceKey },
}

/// [`Up`] as the agent writes it: by reference, so a frame is encoded where it was read.
/// Field for field the same as `Up` (a unit test holds them together).
#[derive(Debug, Serialize)]
pub enum UpRef<'a> {
    Frame {
        key: &'a InstanceKey,
        envelope: &'a Envelope,
    },
    Gone {
        key: &'a InstanceKey,
    },
}

/// Console to agent (`…HOST.down`): a frame for one instance's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Down {
    pub key: InstanceKey,
    pub envelope: Envelope,
}

/// What an agent publishes on `…HOST.status`, twice a second and at every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HostStatus {
    /// Identifies this run of the agent (its start, in Unix microseconds): a new value means
    /// the agent restarted, and every instance of the old run is gone.
    pub boot: u64,
    pub agent_pid: u32,
    /// The agent is stopping: its instances are going, not lost.
    pub leaving: bool,
    pub instances: Vec<RemoteInstance>,
    /// The recent runs of each of its jobs, newest last (see [`RUNS_REPORTED`]).
    pub runs: Vec<(String, Vec<JobRun>)>,
}

/// Runs of each job a status carries, and the longest result of each it carries whole: a
/// status goes out twice a second, so it stays small; the console shows a longer result cut.
pub const RUNS_REPORTED: usize = 5;
pub const RESULT_REPORTED: usize = 16 * 1024;

/// One instance in a [`HostStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteInstance {
    pub key: InstanceKey,
    pub state: InstanceState,
    pub pid: Option<u32>,
    /// Takes requests now (ready and not draining).
    pub routable: bool,
    pub version: Option<String>,
    pub methods: Vec<String>,
    pub topics: Vec<String>,
    pub restarts: u32,
    pub uptime_ms: Option<u64>,
    /// How long ago its heartbeat last moved, as the agent saw it.
    pub heartbeat_age_ms: Option<u64>,
    pub cpu_percent: f32,
    pub rss_bytes: u64,
    pub last_exit: Option<String>,
    /// Its metrics segment as the agent last read it (`None` for a plain program): the
    /// console samples it as it samples a local one.
    pub snapshot: Option<Snapshot>,
}

/// Log lines of an agent's services (`…HOST.logs`), in the order they were kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LogBatch {
    pub lines: Vec<RemoteLogLine>,
    /// Lines the agent could not forward (the console was slower than the services wrote).
    pub lost: u64,
}

/// One line of a [`LogBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteLogLine {
    pub service: String,
    pub replica: u32,
    pub stream: crate::logs::Stream,
    pub text: String,
}

/// A command's outcome, agent to console (`…HOST.control`'s reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlReply {
    Done,
    JobRun(u64),
    Refused(String),
}

#[cfg(test)]
mod tests {
    use switchboard_protocol::{Body, Kind};

    use super::*;

    #[test]
    fn the_agent_s_frames_read_back_as_the_console_s() {
        let key = InstanceKey {
            service: "user".into(),
            replica: 2,
            boot: 1,
            generation: 7,
        };
        let envelope = Envelope {
            id: 9,
            kind: Kind::Request,
            destination: "order".into(),
            method: "create".into(),
            body: Body::Json(b"{}".to_vec().into()),
            ..Envelope::default()
        };
        let bytes = postcard::to_allocvec(&UpRef::Frame {
            key: &key,
            envelope: &envelope,
        })
        .expect("encodes");
        let read: Up = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(
            read,
            Up::Frame {
                key: key.clone(),
                envelope
            }
        );
        let bytes = postcard::to_allocvec(&UpRef::Gone { key: &key }).expect("encodes");
        assert_eq!(
            postcard::from_bytes::<Up>(&bytes).ok(),
            Some(Up::Gone { key })
        );
    }
}
