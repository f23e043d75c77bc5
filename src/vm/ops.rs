//! Long-running operations, as the cloud tracks them: a 202 carries an `Azure-AsyncOperation`
//! URL whose status goes InProgress → Succeeded | Failed. Kept in memory (an operation in flight
//! when the daemon dies is reported as not found; the VM's own state tells the outcome).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::model::ErrorBody;
use super::VmError;

/// How a failed operation is reported: the actor's own code (409 OperationNotAllowed only for a
/// lifecycle refusal, InternalServerError or InsufficientStorage for host trouble) and the
/// error with its causes.
pub fn failure(e: &VmError) -> ErrorBody {
    let code = match e {
        VmError::Actor(a) => a.code(),
        _ => "OperationNotAllowed",
    };
    ErrorBody {
        code: code.into(),
        message: crate::report::chain(e),
        details: vec![],
    }
}

#[derive(Clone, Debug)]
struct Op {
    name: String,
    start: String,
    end: Option<String>,
    /// `Ok(output)`: the operation's result document, if it has one (Run Command's).
    result: Option<Result<Option<Value>, ErrorBody>>,
}

#[derive(Default)]
pub struct Operations {
    ops: Mutex<HashMap<String, Op>>,
}

impl Operations {
    pub fn begin(&self, name: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let op = Op {
            name: name.into(),
            start: crate::report::time_now(),
            end: None,
            result: None,
        };
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        // Keep the table bounded: finished operations older than the newest 1000 are dropped.
        if ops.len() > 1000 {
            let done: Vec<String> = ops
                .iter()
                .filter(|(_, o)| o.end.is_some())
                .map(|(k, _)| k.clone())
                .collect();
            for k in done.into_iter().take(500) {
                ops.remove(&k);
            }
        }
        ops.insert(id.clone(), op);
        id
    }

    /// Ends an operation with no output document: `Err` is what [`failure`] made of its error.
    pub fn finish(&self, id: &str, result: Result<(), ErrorBody>) {
        self.finish_with(id, result.map(|()| None));
    }

    /// Ends an operation with its output document or the cloud-shaped error to report.
    pub fn finish_with(&self, id: &str, result: Result<Option<Value>, ErrorBody>) {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(op) = ops.get_mut(id) {
            op.end = Some(crate::report::time_now());
            op.result = Some(result);
        }
    }

    /// The output of a finished operation: `None` while it runs (or is unknown),
    /// `Some(Err)` if it failed.
    pub fn output(&self, id: &str) -> Option<Result<Option<Value>, ErrorBody>> {
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        ops.get(id)?.result.clone()
    }

    pub fn exists(&self, id: &str) -> bool {
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        ops.contains_key(id)
    }

    /// The operation as the cloud's status endpoint shows it.
    pub fn status(&self, id: &str) -> Option<Value> {
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let op = ops.get(id)?;
        let mut v = json!({ "name": id, "operation": op.name, "startTime": op.start });
        match &op.result {
            None => v["status"] = json!("InProgress"),
            Some(Ok(out)) => {
                v["status"] = json!("Succeeded");
                v["endTime"] = json!(op.end);
                if let Some(o) = out {
                    v["properties"] = json!({ "output": o });
                }
            }
            Some(Err(e)) => {
                v["status"] = json!("Failed");
                v["endTime"] = json!(op.end);
                v["error"] = json!(e);
            }
        }
        Some(v)
    }
}
