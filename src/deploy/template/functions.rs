//! The template functions that depend only on their arguments (strings, numbers, logic,
//! `base64`, `uniqueString`); the ones that read parameters, variables or the scope are the
//! evaluator's (`eval.rs`).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::invalid;
use crate::deploy::DeployError;

/// A call's name (as written, for messages) and its evaluated arguments.
pub struct Args<'a> {
    pub name: &'a str,
    pub a: &'a [Value],
}

impl Args<'_> {
    /// Argument `i` as a string (numbers and booleans are written out, as the cloud does).
    pub fn s(&self, i: usize) -> Result<String, DeployError> {
        let name = self.name;
        match self.a.get(i) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            Some(other) => Err(invalid(format!(
                "{name}(): argument {} is {other}, not a string",
                i + 1
            ))),
            None => Err(invalid(format!("{name}(): missing argument {}", i + 1))),
        }
    }

    /// Between `lo` and `hi` arguments.
    pub fn arity(&self, lo: usize, hi: usize) -> Result<(), DeployError> {
        if self.a.len() < lo || self.a.len() > hi {
            return Err(invalid(format!(
                "{}() takes {lo}..{hi} arguments, {} given",
                self.name,
                self.a.len()
            )));
        }
        Ok(())
    }
}

/// Function `lname` (lower case) applied to `args`; `None` when it is not one of these.
pub fn call(lname: &str, args: &Args) -> Option<Result<Value, DeployError>> {
    match lname {
        "concat" | "format" | "tolower" | "toupper" | "string" | "int" | "base64"
        | "uniquestring" => Some(strings(lname, args)),
        "true" | "false" | "equals" | "not" | "and" | "or" | "if" | "empty" | "length" => {
            Some(logic(lname, args))
        }
        _ => None,
    }
}

fn strings(lname: &str, args: &Args) -> Result<Value, DeployError> {
    let (a, s, arity) = (args.a, |i| args.s(i), |lo, hi| args.arity(lo, hi));
    match lname {
        "concat" => {
            if a.iter().all(Value::is_array) && !a.is_empty() {
                Ok(Value::Array(
                    a.iter()
                        .flat_map(|x| x.as_array().cloned().unwrap_or_default())
                        .collect(),
                ))
            } else {
                let mut out = String::new();
                for i in 0..a.len() {
                    out.push_str(&s(i)?);
                }
                Ok(Value::String(out))
            }
        }
        "format" => {
            arity(1, 64)?;
            let f = s(0)?;
            let mut out = f.clone();
            for i in 1..a.len() {
                out = out.replace(&format!("{{{}}}", i - 1), &s(i)?);
            }
            Ok(Value::String(out))
        }
        "tolower" => Ok(Value::String(s(0)?.to_lowercase())),
        "toupper" => Ok(Value::String(s(0)?.to_uppercase())),
        "string" => {
            arity(1, 1)?;
            Ok(Value::String(match &a[0] {
                Value::String(x) => x.clone(),
                other => other.to_string(),
            }))
        }
        "int" => {
            arity(1, 1)?;
            let v = s(0)?;
            v.trim()
                .parse::<i64>()
                .map(|n| json!(n))
                .map_err(|_| invalid(format!("int(): '{v}' is not an integer")))
        }
        "base64" => {
            use base64::Engine as _;
            Ok(Value::String(
                base64::engine::general_purpose::STANDARD.encode(s(0)?),
            ))
        }
        "uniquestring" => {
            arity(1, 64)?;
            let mut h = Sha256::new();
            for i in 0..a.len() {
                h.update(s(i)?.as_bytes());
                h.update([0]);
            }
            // 13 characters of base-32, lower case, like the cloud's.
            const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
            let d = h.finalize();
            let v = u64::from_be_bytes(d[..8].try_into().unwrap_or_default());
            Ok(Value::String(
                (0..13)
                    .map(|i| ALPHA[((v >> (i * 5)) & 31) as usize] as char)
                    .collect(),
            ))
        }
        _ => unreachable!("strings() is called for the string functions"),
    }
}

fn logic(lname: &str, args: &Args) -> Result<Value, DeployError> {
    let (a, name, arity) = (args.a, args.name, |lo, hi| args.arity(lo, hi));
    match lname {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        "equals" => {
            arity(2, 2)?;
            Ok(Value::Bool(a[0] == a[1]))
        }
        "not" => match a {
            [Value::Bool(b)] => Ok(Value::Bool(!b)),
            _ => Err(invalid("not() takes one boolean")),
        },
        "and" | "or" => {
            let bools: Option<Vec<bool>> = a.iter().map(Value::as_bool).collect();
            let b = bools.ok_or_else(|| invalid(format!("{name}() takes booleans")))?;
            Ok(Value::Bool(if lname == "and" {
                b.iter().all(|x| *x)
            } else {
                b.iter().any(|x| *x)
            }))
        }
        "if" => match a {
            [Value::Bool(c), t, f] => Ok(if *c { t.clone() } else { f.clone() }),
            _ => Err(invalid("if() takes a boolean and two values")),
        },
        "empty" => {
            arity(1, 1)?;
            Ok(Value::Bool(match &a[0] {
                Value::Null => true,
                Value::String(x) => x.is_empty(),
                Value::Array(x) => x.is_empty(),
                Value::Object(x) => x.is_empty(),
                _ => false,
            }))
        }
        "length" => {
            arity(1, 1)?;
            match &a[0] {
                Value::String(x) => Ok(json!(x.chars().count())),
                Value::Array(x) => Ok(json!(x.len())),
                Value::Object(x) => Ok(json!(x.len())),
                other => Err(invalid(format!("length() of {other}"))),
            }
        }
        _ => unreachable!("logic() is called for the logic functions"),
    }
}
