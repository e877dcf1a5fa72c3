//! Commands for services of other hosts, sent to their agents on `…HOST.control`.

use super::*;

/// Commands for services of other hosts, sent to their agents.
pub(super) struct Commands {
    pub(super) client: async_nats::Client,
    pub(super) subjects: Subjects,
}

impl RemoteControl for Commands {
    fn command(
        &self,
        host: String,
        command: Command,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Reply, ControlError>> + Send>> {
        let client = self.client.clone();
        let subject = self.subjects.control(&host);
        Box::pin(async move {
            let text = Bytes::from(command.to_string());
            let answer = tokio::time::timeout(COMMAND_TIMEOUT, client.request(subject, text))
                .await
                .map_err(|_| ControlError::HostUnreachable(host.clone()))?
                .map_err(|_| ControlError::HostUnreachable(host.clone()))?;
            match postcard::from_bytes::<ControlReply>(&answer.payload) {
                Ok(ControlReply::Done) => Ok(Reply::Done),
                Ok(ControlReply::JobRun(run)) => Ok(Reply::JobRun(run)),
                Ok(ControlReply::Refused(message)) => Err(ControlError::OnHost { host, message }),
                Err(_) => Err(ControlError::OnHost {
                    host,
                    message: "the agent's answer is malformed".to_string(),
                }),
            }
        })
    }
}
