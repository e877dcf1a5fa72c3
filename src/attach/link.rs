//! The attached console's link: the console stream, read into the shared model, and made
//! again with backoff whenever it drops.

use std::{sync::Arc, time::Duration};

use super::{LOGS_KEPT, Shared};
use crate::{
    api::{API_VERSION, ConsoleView, EventView, LogView, patch, stream::Hello},
    client::Client,
};

/// The first wait after the link drops; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps the link up for as long as it runs.
pub async fn run(shared: Arc<Shared>, client: Client) {
    let mut backoff = FIRST_BACKOFF;
    let path = format!("/admin/console?logs={LOGS_KEPT}");
    loop {
        let mut greeted = false;
        let mut problem = None;
        let result = client
            .events(&path, |name, data| {
                match receive(&shared, name, data) {
                    Ok(hello) => greeted |= hello,
                    Err(why) => {
                        // Out of step with the instance: connect again for a fresh hello.
                        problem = Some(why);
                        return false;
                    }
                }
                true
            })
            .await;
        if greeted {
            backoff = FIRST_BACKOFF;
        }
        let why = match (result, problem) {
            (_, Some(why)) => why,
            (Err(err), None) => err.to_string(),
            (Ok(()), None) => "the instance closed the link".into(),
        };
        {
            let mut model = shared.model();
            model.link.connected = false;
            model.link.problem = Some(format!(
                "link down: {why}; retrying in {:.1}s",
                backoff.as_secs_f64()
            ));
        }
        tracing::info!(cause = %why, "attach link down");
        // Redraw now, so the header says so at once.
        shared.view_seq.send_modify(|n| *n += 1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Applies one message of the stream; `Ok(true)` for a `hello`.
fn receive(shared: &Shared, name: &str, data: &str) -> Result<bool, String> {
    match name {
        "hello" => {
            let hello: Hello =
                serde_json::from_str(data).map_err(|err| format!("bad hello: {err}"))?;
            if hello.api != API_VERSION {
                return Err(format!(
                    "the instance speaks admin API v{}, this console v{API_VERSION}",
                    hello.api
                ));
            }
            let json = serde_json::to_value(&hello.view).map_err(|err| err.to_string())?;
            let mut model = shared.model();
            model.json = json;
            model.view = hello.view;
            model.logs = hello.logs.into_iter().collect();
            model.link.connected = true;
            model.link.problem = None;
            drop(model);
            shared.log_seq.send_modify(|n| *n += 1);
            shared.view_seq.send_modify(|n| *n += 1);
            Ok(true)
        }
        "patch" => {
            let change: serde_json::Value =
                serde_json::from_str(data).map_err(|err| format!("bad patch: {err}"))?;
            let mut model = shared.model();
            patch::apply(&mut model.json, &change).map_err(|err| err.to_string())?;
            model.view = serde_json::from_value::<ConsoleView>(model.json.clone())
                .map_err(|err| format!("bad view after a patch: {err}"))?;
            drop(model);
            shared.view_seq.send_modify(|n| *n += 1);
            Ok(false)
        }
        "event" => {
            if let Ok(event) = serde_json::from_str::<EventView>(data) {
                let _ = shared.events.send(event);
            }
            Ok(false)
        }
        "logs" => {
            let lines: Vec<LogView> =
                serde_json::from_str(data).map_err(|err| format!("bad log lines: {err}"))?;
            let mut model = shared.model();
            model.logs.extend(lines);
            let excess = model.logs.len().saturating_sub(LOGS_KEPT);
            model.logs.drain(..excess);
            drop(model);
            shared.log_seq.send_modify(|n| *n += 1);
            Ok(false)
        }
        _ => Ok(false),
    }
}
