//! Template expressions evaluated against parameters, variables and the scope.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::expr::{parse, Expr};
use super::functions::{self, Args};
use super::{invalid, resource_id, Scope};
use crate::deploy::DeployError;

/// How many times one template may expand `variables(...)`. Variables referring twice to the
/// next, 32 deep, would otherwise be 2^32 expansions from a few hundred bytes of request.
const MAX_EXPANSIONS: u32 = 10_000;
/// The longest string a function may return (`concat`/`format` over variables doubling).
const MAX_STRING: usize = 1 << 20;

/// Evaluates template expressions against parameters, variables and the scope.
pub struct Evaluator {
    params: BTreeMap<String, Value>,
    variables: Map<String, Value>,
    scope: Scope,
    /// `variables(...)` expansions so far (see [`MAX_EXPANSIONS`]).
    expansions: std::cell::Cell<u32>,
}

impl Evaluator {
    pub fn new(template: &Value, given: &Value, scope: &Scope) -> Result<Evaluator, DeployError> {
        let declared = template
            .get("parameters")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let given = given.as_object().cloned().unwrap_or_default();
        for k in given.keys() {
            if !declared.keys().any(|d| d.eq_ignore_ascii_case(k)) {
                return Err(invalid(format!(
                    "the parameter '{k}' is given but the template does not declare it (declared: {})",
                    declared.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let mut ev = Evaluator {
            params: BTreeMap::new(),
            variables: template
                .get("variables")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            scope: scope.clone(),
            expansions: std::cell::Cell::new(0),
        };
        for (name, decl) in &declared {
            let supplied = given
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| match v.get("value") {
                    Some(x) => Ok(x.clone()),
                    None => Err(invalid(format!(
                        "the parameter '{name}' must be given as {{\"value\": …}}"
                    ))),
                })
                .transpose()?;
            let value = match supplied {
                Some(v) => v,
                None => match decl.get("defaultValue") {
                    // Defaults may themselves be expressions over earlier parameters.
                    Some(d) => ev.eval(d)?,
                    None => {
                        return Err(invalid(format!(
                            "the value for the template parameter '{name}' is not provided"
                        )))
                    }
                },
            };
            if let Some(allowed) = decl.get("allowedValues").and_then(Value::as_array) {
                if !allowed.contains(&value) {
                    return Err(invalid(format!(
                        "the provided value {value} for the template parameter '{name}' is not valid; allowed values: {}",
                        Value::Array(allowed.clone())
                    )));
                }
            }
            check_type(name, decl.get("type").and_then(Value::as_str), &value)?;
            ev.params.insert(name.to_lowercase(), value);
        }
        Ok(ev)
    }

    /// Evaluates every string that is an expression (`[...]`, not `[[...`) inside `v`.
    pub fn eval(&self, v: &Value) -> Result<Value, DeployError> {
        self.eval_depth(v, 0)
    }

    fn eval_depth(&self, v: &Value, depth: u32) -> Result<Value, DeployError> {
        if depth > 32 {
            return Err(invalid(
                "expressions nest too deeply (variables referring to each other in a loop?)",
            ));
        }
        Ok(match v {
            Value::String(s) => {
                if let Some(lit) = s.strip_prefix("[[") {
                    Value::String(format!("[{lit}"))
                } else if s.starts_with('[') && s.ends_with(']') && s.len() >= 2 {
                    let e = parse(s)?;
                    self.apply(&e, depth)?
                } else {
                    v.clone()
                }
            }
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.eval_depth(x, depth))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => {
                let mut m = Map::new();
                for (k, x) in o {
                    m.insert(k.clone(), self.eval_depth(x, depth)?);
                }
                Value::Object(m)
            }
            other => other.clone(),
        })
    }

    fn apply(&self, e: &Expr, depth: u32) -> Result<Value, DeployError> {
        match e {
            Expr::Str(s) => Ok(Value::String(s.clone())),
            Expr::Num(n) => Ok(json!(n)),
            Expr::Member(base, key) => {
                let b = self.apply(base, depth)?;
                b.get(key.as_str())
                    .or_else(|| {
                        b.as_object().and_then(|o| {
                            o.iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                                .map(|(_, v)| v)
                        })
                    })
                    .cloned()
                    .ok_or_else(|| invalid(format!("the value {b} has no property '{key}'")))
            }
            Expr::Index(base, idx) => {
                let b = self.apply(base, depth)?;
                let i = self.apply(idx, depth)?;
                match (&b, &i) {
                    (Value::Array(a), Value::Number(n)) => n
                        .as_u64()
                        .and_then(|n| a.get(n as usize))
                        .cloned()
                        .ok_or_else(|| invalid(format!("index {n} is outside the array {b}"))),
                    (Value::Object(_), Value::String(k)) => b
                        .get(k)
                        .cloned()
                        .ok_or_else(|| invalid(format!("the value {b} has no property '{k}'"))),
                    _ => Err(invalid(format!("cannot index {b} with {i}"))),
                }
            }
            Expr::Call(name, args) => {
                let vals = args
                    .iter()
                    .map(|a| self.apply(a, depth))
                    .collect::<Result<Vec<_>, _>>()?;
                let out = self.call(name, &vals, depth)?;
                if out.as_str().is_some_and(|s| s.len() > MAX_STRING) {
                    return Err(invalid(format!(
                        "{name}() would make a string over {} MiB",
                        MAX_STRING >> 20
                    )));
                }
                Ok(out)
            }
        }
    }

    fn call(&self, name: &str, a: &[Value], depth: u32) -> Result<Value, DeployError> {
        let args = Args { name, a };
        let lname = name.to_ascii_lowercase();
        match lname.as_str() {
            "parameters" => {
                args.arity(1, 1)?;
                let k = args.s(0)?;
                self.params
                    .get(&k.to_lowercase())
                    .cloned()
                    .ok_or_else(|| invalid(format!("the template parameter '{k}' is not found")))
            }
            "variables" => {
                args.arity(1, 1)?;
                self.variable(&args.s(0)?, depth)
            }
            "resourcegroup" | "subscription" | "deployment" | "resourceid" => {
                self.scope_function(&lname, &args)
            }
            "reference" | "list" | "listkeys" | "reference2" => Err(invalid(format!(
                "{name}() is not supported by vmnode's template engine (runtime values of other resources); pass the value as a parameter"
            ))),
            _ => functions::call(&lname, &args).unwrap_or_else(|| {
                Err(invalid(format!(
                    "the template function '{name}' is not known to vmnode's template engine"
                )))
            }),
        }
    }

    /// `variables('k')`: the variable's value, evaluated (and counted, see [`MAX_EXPANSIONS`]).
    fn variable(&self, k: &str, depth: u32) -> Result<Value, DeployError> {
        let raw = self
            .variables
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)
            .ok_or_else(|| invalid(format!("the template variable '{k}' is not found")))?;
        let n = self.expansions.get() + 1;
        if n > MAX_EXPANSIONS {
            return Err(invalid(format!(
                "the template expands variables more than {MAX_EXPANSIONS} times"
            )));
        }
        self.expansions.set(n);
        self.eval_depth(raw, depth + 1)
    }

    /// The functions that read the deployment's scope: `resourceGroup()`, `subscription()`,
    /// `deployment()`, `resourceId(...)`.
    fn scope_function(&self, lname: &str, args: &Args) -> Result<Value, DeployError> {
        let (a, s) = (args.a, |i| args.s(i));
        match lname {
            "resourcegroup" => Ok(json!({
                "id": format!("/subscriptions/{}/resourceGroups/{}", self.scope.subscription, self.scope.resource_group),
                "name": self.scope.resource_group,
                "location": self.scope.location,
                "type": "Microsoft.Resources/resourceGroups",
                "properties": {"provisioningState": "Succeeded"},
            })),
            "subscription" => Ok(json!({
                "id": format!("/subscriptions/{}", self.scope.subscription),
                "subscriptionId": self.scope.subscription,
                "displayName": "vmnode",
            })),
            "deployment" => Ok(json!({
                "name": self.scope.deployment,
                "properties": {},
            })),
            "resourceid" => {
                // resourceId([subscriptionId], [resourceGroup], type, name1, name2 …)
                let all: Vec<String> = (0..a.len()).map(s).collect::<Result<_, _>>()?;
                let t = all
                .iter()
                .position(|x| x.contains('/') && x.contains('.'))
                .ok_or_else(|| invalid("resourceId() needs a resource type such as 'Microsoft.Network/virtualNetworks'"))?;
                let mut scope = self.scope.clone();
                match t {
                    0 => {}
                    1 => scope.resource_group = all[0].clone(),
                    2 => {
                        scope.subscription = all[0].clone();
                        scope.resource_group = all[1].clone();
                    }
                    _ => return Err(invalid("resourceId(): too many arguments before the type")),
                }
                let names = all[t + 1..].join("/");
                Ok(Value::String(resource_id(&scope, &all[t], &names)?))
            }
            _ => unreachable!("scope_function is called for the four scope functions"),
        }
    }
}

fn check_type(name: &str, ty: Option<&str>, v: &Value) -> Result<(), DeployError> {
    let ok = match ty.map(str::to_ascii_lowercase).as_deref() {
        Some("string") | Some("securestring") => v.is_string(),
        Some("int") => v.is_i64() || v.is_u64(),
        Some("bool") => v.is_boolean(),
        Some("array") => v.is_array(),
        Some("object") | Some("secureobject") => v.is_object(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "the template parameter '{name}' is declared {} but was given {v}",
            ty.unwrap_or("?")
        )))
    }
}
