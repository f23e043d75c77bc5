//! ARM templates, the part vmnode evaluates: parameters (with defaults and allowed values),
//! variables, template expressions (`[concat(...)]`, `[parameters('x')]`, `[resourceId(...)]`
//! …) and the resource list with nested child resources flattened and ordered by `dependsOn`.
//!
//! Evaluation is pure: the same template, parameters and scope always give the same plan.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::DeployError;

/// Where a deployment runs: what `resourceGroup()`, `subscription()` and `deployment()` return.
#[derive(Clone, Debug)]
pub struct Scope {
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub deployment: String,
}

/// One resource to PUT, fully evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedResource {
    /// e.g. `Microsoft.Compute/virtualMachines/extensions`
    pub resource_type: String,
    /// e.g. `vm1/ext1`
    pub name: String,
    pub api_version: String,
    /// `/subscriptions/…/resourceGroups/…/providers/…`
    pub id: String,
    /// The PUT body (location, tags, properties, sku …).
    pub body: Value,
    /// Indexes of the resources this one waits for.
    pub depends_on: Vec<usize>,
}

/// Keys of a template resource that are directives to ARM, not part of the resource's body.
const DIRECTIVES: &[&str] = &[
    "type",
    "apiVersion",
    "name",
    "dependsOn",
    "condition",
    "resources",
    "copy",
    "comments",
    "metadata",
];

fn invalid(msg: impl Into<String>) -> DeployError {
    DeployError::InvalidTemplate(msg.into())
}

/// Evaluates a template with the caller's parameters (`{"name": {"value": …}}`) into the ordered
/// list of resources to deploy.
pub fn plan(
    template: &Value,
    parameters: &Value,
    scope: &Scope,
) -> Result<Vec<PlannedResource>, DeployError> {
    if !template.is_object() {
        return Err(invalid("the template must be a JSON object"));
    }
    let ev = Evaluator::new(template, parameters, scope)?;
    let mut flat = Vec::new();
    let resources = template
        .get("resources")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let Some(list) = resources.as_array() else {
        return Err(invalid("'resources' must be an array"));
    };
    for (i, r) in list.iter().enumerate() {
        flatten(&ev, r, None, &format!("resources[{i}]"), &mut flat)?;
    }
    order(flat, scope)
}

/// A resource before ordering: evaluated, with its dependsOn still as written.
struct Flat {
    rtype: String,
    name: String,
    api_version: String,
    body: Value,
    depends: Vec<String>,
}

fn flatten(
    ev: &Evaluator,
    r: &Value,
    parent: Option<(&str, &str, &str)>,
    at: &str,
    out: &mut Vec<Flat>,
) -> Result<(), DeployError> {
    let Some(obj) = r.as_object() else {
        return Err(invalid(format!("{at} must be an object")));
    };
    if obj.contains_key("copy") {
        return Err(invalid(format!(
            "{at}: copy loops are not supported by vmnode; write the resources out"
        )));
    }
    if let Some(c) = obj.get("condition") {
        match ev.eval(c)? {
            Value::Bool(false) => return Ok(()),
            Value::Bool(true) => {}
            other => return Err(invalid(format!("{at}.condition is {other}, not a boolean"))),
        }
    }
    let field = |k: &str| -> Result<String, DeployError> {
        match obj.get(k).map(|v| ev.eval(v)).transpose()? {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(other) => Err(invalid(format!("{at}.{k} must be a string, not {other}"))),
            None => Err(invalid(format!("{at} has no '{k}'"))),
        }
    };
    let (mut rtype, mut name) = (field("type")?, field("name")?);
    // A child written inside its parent may leave out the apiVersion: it takes the parent's.
    let api_version = field("apiVersion").or_else(|e| match parent {
        Some((_, _, v)) => Ok(v.to_string()),
        None => Err(e),
    })?;
    if let Some((ptype, pname, _)) = parent {
        // A child written inside its parent: short type and name, as ARM allows.
        if !rtype.contains('/') {
            rtype = format!("{ptype}/{rtype}");
        }
        if rtype.matches('/').count() > name.matches('/').count() + 1 {
            name = format!("{pname}/{name}");
        }
    }
    let mut body = Map::new();
    for (k, v) in obj {
        if !DIRECTIVES.contains(&k.as_str()) {
            body.insert(k.clone(), ev.eval(v)?);
        }
    }
    let mut depends = Vec::new();
    if let Some(d) = obj.get("dependsOn") {
        match ev.eval(d)? {
            Value::Array(a) => {
                for x in a {
                    match x {
                        Value::String(s) => depends.push(s),
                        other => {
                            return Err(invalid(format!(
                                "{at}.dependsOn holds {other}, not a resource id or name"
                            )))
                        }
                    }
                }
            }
            other => {
                return Err(invalid(format!(
                    "{at}.dependsOn must be an array, not {other}"
                )))
            }
        }
    }
    if let Some(p) = parent {
        // A nested child always waits for its parent.
        depends.push(format!("{}/{}", p.0, p.1));
    }
    out.push(Flat {
        rtype: rtype.clone(),
        name: name.clone(),
        api_version: api_version.clone(),
        body: Value::Object(body),
        depends,
    });
    if let Some(children) = obj.get("resources") {
        let Some(children) = children.as_array() else {
            return Err(invalid(format!("{at}.resources must be an array")));
        };
        for (j, c) in children.iter().enumerate() {
            flatten(
                ev,
                c,
                Some((&rtype, &name, &api_version)),
                &format!("{at}.resources[{j}]"),
                out,
            )?;
        }
    }
    Ok(())
}

/// `Microsoft.Compute/virtualMachines/extensions` + `vm1/ext1` → the resource's id.
pub fn resource_id(scope: &Scope, rtype: &str, name: &str) -> Result<String, DeployError> {
    let mut t = rtype.split('/');
    let ns = t.next().unwrap_or_default();
    let types: Vec<&str> = t.collect();
    let names: Vec<&str> = name.split('/').collect();
    if ns.is_empty() || types.is_empty() || types.len() != names.len() {
        return Err(invalid(format!(
            "the resource name '{name}' does not fit its type '{rtype}': a type with {} segment(s) after the namespace needs as many name segments",
            types.len()
        )));
    }
    let mut id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/{ns}",
        scope.subscription, scope.resource_group
    );
    for (t, n) in types.iter().zip(&names) {
        if n.is_empty() {
            return Err(invalid(format!(
                "the resource name '{name}' has an empty segment"
            )));
        }
        id.push_str(&format!("/{t}/{n}"));
    }
    Ok(id)
}

fn order(flat: Vec<Flat>, scope: &Scope) -> Result<Vec<PlannedResource>, DeployError> {
    let mut planned = Vec::with_capacity(flat.len());
    for f in &flat {
        planned.push(PlannedResource {
            id: resource_id(scope, &f.rtype, &f.name)?,
            resource_type: f.rtype.clone(),
            name: f.name.clone(),
            api_version: f.api_version.clone(),
            body: f.body.clone(),
            depends_on: Vec::new(),
        });
    }
    let mut seen = HashMap::new();
    for (i, p) in planned.iter().enumerate() {
        if let Some(j) = seen.insert(p.id.to_lowercase(), i) {
            return Err(invalid(format!(
                "the resource '{}' is defined more than once (resources {j} and {i})",
                p.id
            )));
        }
    }
    // A dependsOn entry names a resource by id, by `type/name`, or by name alone.
    for (i, f) in flat.iter().enumerate() {
        for d in &f.depends {
            let dl = d.to_lowercase();
            let found = planned.iter().position(|p| {
                let typed = format!("{}/{}", p.resource_type, p.name).to_lowercase();
                let id = p.id.to_lowercase();
                dl == id
                    || id.ends_with(&format!("/providers/{dl}"))
                    || dl == typed
                    || typed_id_matches(&dl, &p.resource_type, &p.name)
                    || dl == p.name.to_lowercase()
            });
            match found {
                Some(j) if j != i => planned[i].depends_on.push(j),
                Some(_) => {}
                None => {
                    return Err(invalid(format!(
                        "the resource '{}' depends on '{d}', which is not defined in the template",
                        planned[i].id
                    )))
                }
            }
        }
    }
    // Kahn's algorithm, stable: among ready resources the template's order wins.
    let n = planned.len();
    let mut done = vec![false; n];
    let mut out = Vec::with_capacity(n);
    let mut remap = vec![0usize; n];
    while out.len() < n {
        let next = (0..n).find(|&i| !done[i] && planned[i].depends_on.iter().all(|&d| done[d]));
        let Some(i) = next else {
            let stuck: Vec<&str> = (0..n)
                .filter(|&i| !done[i])
                .map(|i| planned[i].id.as_str())
                .collect();
            return Err(invalid(format!(
                "circular dependency among: {}",
                stuck.join(", ")
            )));
        };
        done[i] = true;
        remap[i] = out.len();
        out.push(i);
    }
    let mut sorted: Vec<PlannedResource> = out.iter().map(|&i| planned[i].clone()).collect();
    for p in &mut sorted {
        p.depends_on = p.depends_on.iter().map(|&d| remap[d]).collect();
    }
    Ok(sorted)
}

/// `resourceId('T', 'n')` renders `…/providers/T/n`; a dependsOn may be written that way with
/// segments interleaved (`Microsoft.Compute/virtualMachines/vm1/extensions/e1`).
fn typed_id_matches(dep: &str, rtype: &str, name: &str) -> bool {
    let mut t = rtype.split('/');
    let ns = t.next().unwrap_or_default();
    let mut s = ns.to_string();
    for (ty, n) in t.zip(name.split('/')) {
        s.push_str(&format!("/{ty}/{n}"));
    }
    dep == s.to_lowercase()
}

/// Evaluates template expressions against parameters, variables and the scope.
pub struct Evaluator {
    params: BTreeMap<String, Value>,
    variables: Map<String, Value>,
    scope: Scope,
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
                    let mut p = Parser {
                        src: &s[1..s.len() - 1],
                        pos: 0,
                        whole: s,
                    };
                    let e = p.expr()?;
                    p.ws();
                    if p.pos != p.src.len() {
                        return Err(p.err("unexpected text after the expression"));
                    }
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
                self.call(name, &vals, depth)
            }
        }
    }

    fn call(&self, name: &str, a: &[Value], depth: u32) -> Result<Value, DeployError> {
        let s = |i: usize| -> Result<String, DeployError> {
            match a.get(i) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(Value::Bool(b)) => Ok(b.to_string()),
                Some(other) => Err(invalid(format!(
                    "{name}(): argument {} is {other}, not a string",
                    i + 1
                ))),
                None => Err(invalid(format!("{name}(): missing argument {}", i + 1))),
            }
        };
        let arity = |lo: usize, hi: usize| -> Result<(), DeployError> {
            if a.len() < lo || a.len() > hi {
                return Err(invalid(format!(
                    "{name}() takes {lo}..{hi} arguments, {} given",
                    a.len()
                )));
            }
            Ok(())
        };
        let lname = name.to_ascii_lowercase();
        match lname.as_str() {
            "parameters" => {
                arity(1, 1)?;
                let k = s(0)?;
                self.params
                    .get(&k.to_lowercase())
                    .cloned()
                    .ok_or_else(|| invalid(format!("the template parameter '{k}' is not found")))
            }
            "variables" => {
                arity(1, 1)?;
                let k = s(0)?;
                let raw = self
                    .variables
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&k))
                    .map(|(_, v)| v)
                    .ok_or_else(|| invalid(format!("the template variable '{k}' is not found")))?;
                self.eval_depth(raw, depth + 1)
            }
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
            "reference" | "list" | "listkeys" | "reference2" => Err(invalid(format!(
                "{name}() is not supported by vmnode's template engine (runtime values of other resources); pass the value as a parameter"
            ))),
            _ => Err(invalid(format!(
                "the template function '{name}' is not known to vmnode's template engine"
            ))),
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

#[derive(Debug, Clone)]
enum Expr {
    Str(String),
    Num(i64),
    Call(String, Vec<Expr>),
    Member(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    whole: &'a str,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> DeployError {
        invalid(format!(
            "the template expression '{}' is not valid: {what} at character {}",
            self.whole,
            self.pos + 2
        ))
    }
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }
    fn expr(&mut self) -> Result<Expr, DeployError> {
        self.ws();
        let mut e = match self.peek() {
            Some('\'') => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    let Some(c) = self.peek() else {
                        return Err(self.err("an unterminated string"));
                    };
                    self.pos += c.len_utf8();
                    if c == '\'' {
                        if self.peek() == Some('\'') {
                            self.pos += 1;
                            s.push('\'');
                        } else {
                            break;
                        }
                    } else {
                        s.push(c);
                    }
                }
                Expr::Str(s)
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                let n = self.src[start..self.pos]
                    .parse()
                    .map_err(|_| self.err("a bad number"))?;
                Expr::Num(n)
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let name = self.ident();
                if !self.eat('(') {
                    return Err(self.err(&format!("'{name}' must be called: {name}(…)")));
                }
                let mut args = Vec::new();
                if !self.eat(')') {
                    loop {
                        args.push(self.expr()?);
                        if self.eat(')') {
                            break;
                        }
                        if !self.eat(',') {
                            return Err(self.err("expected ',' or ')'"));
                        }
                    }
                }
                Expr::Call(name, args)
            }
            _ => return Err(self.err("expected a string, a number or a function call")),
        };
        loop {
            if self.eat('.') {
                self.ws();
                let key = self.ident();
                if key.is_empty() {
                    return Err(self.err("expected a property name after '.'"));
                }
                e = Expr::Member(Box::new(e), key);
            } else if self.eat('[') {
                let idx = self.expr()?;
                if !self.eat(']') {
                    return Err(self.err("expected ']'"));
                }
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }
    fn ident(&mut self) -> String {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos += 1;
        }
        self.src[start..self.pos].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            subscription: "sub1".into(),
            resource_group: "rg1".into(),
            location: "local".into(),
            deployment: "dep1".into(),
        }
    }

    fn ev(template: Value, params: Value) -> Evaluator {
        Evaluator::new(&template, &params, &scope()).unwrap()
    }

    #[test]
    fn expressions_evaluate_like_arm() {
        let e = ev(
            json!({
                "parameters": {
                    "vmName": {"type": "string"},
                    "size": {"type": "string", "defaultValue": "[concat('Standard_', 'B1s')]"}
                },
                "variables": {"nic": "[concat(parameters('vmName'), '-nic')]", "list": ["a", "b"]}
            }),
            json!({"vmName": {"value": "web"}}),
        );
        let cases = [
            ("[parameters('vmName')]", json!("web")),
            ("[parameters('size')]", json!("Standard_B1s")),
            ("[variables('nic')]", json!("web-nic")),
            ("[variables('list')[1]]", json!("b")),
            ("[resourceGroup().location]", json!("local")),
            ("[format('{0}-{1}', 'a', 7)]", json!("a-7")),
            ("[toLower('AbC')]", json!("abc")),
            ("[if(equals(parameters('vmName'), 'web'), 1, 2)]", json!(1)),
            ("[[literal]", json!("[literal]")),
            ("plain", json!("plain")),
            ("['it''s']", json!("it's")),
            (
                "[resourceId('Microsoft.Network/networkInterfaces', variables('nic'))]",
                json!("/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.Network/networkInterfaces/web-nic"),
            ),
            (
                "[resourceId('Microsoft.Compute/virtualMachines/extensions', 'vm', 'cse')]",
                json!("/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm/extensions/cse"),
            ),
        ];
        for (expr, want) in cases {
            assert_eq!(ev_str(&e, expr), want, "{expr}");
        }
        let u1 = ev_str(&e, "[uniqueString(resourceGroup().id)]");
        assert_eq!(u1.as_str().unwrap().len(), 13);
        assert_eq!(u1, ev_str(&e, "[uniqueString(resourceGroup().id)]"));
    }

    fn ev_str(e: &Evaluator, s: &str) -> Value {
        e.eval(&json!(s)).unwrap()
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let e = ev(json!({"variables": {"a": "[variables('a')]"}}), json!({}));
        for (expr, needle) in [
            ("[concat('a']", "expected ',' or ')'"),
            ("[nosuch(1)]", "not known"),
            ("[parameters('x')]", "'x' is not found"),
            ("[variables('a')]", "nest too deeply"),
            ("[reference('x').foo]", "not supported"),
            ("['open]", "unterminated"),
        ] {
            let err = e.eval(&json!(expr)).unwrap_err().to_string();
            assert!(err.contains(needle), "{expr}: {err}");
        }
        let err = Evaluator::new(
            &json!({"parameters": {"p": {"type": "string"}}}),
            &json!({}),
            &scope(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("'p' is not provided"), "{err}");
        let err = Evaluator::new(
            &json!({"parameters": {"p": {"type": "int"}}}),
            &json!({"p": {"value": "x"}}),
            &scope(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("declared int"), "{err}");
        let err = Evaluator::new(
            &json!({"parameters": {"p": {"type": "string", "allowedValues": ["a"]}}}),
            &json!({"p": {"value": "b"}}),
            &scope(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("allowed values"), "{err}");
    }

    #[test]
    fn resources_are_flattened_and_ordered_by_depends_on() {
        let t = json!({
            "parameters": {"vm": {"type": "string", "defaultValue": "vm1"}},
            "resources": [
                {
                    "type": "Microsoft.Compute/virtualMachines/extensions",
                    "apiVersion": "2023-03-01",
                    "name": "[concat(parameters('vm'), '/cse')]",
                    "location": "[resourceGroup().location]",
                    "dependsOn": ["[resourceId('Microsoft.Compute/virtualMachines', parameters('vm'))]"],
                    "properties": {"publisher": "Microsoft.Azure.Extensions"}
                },
                {
                    "type": "Microsoft.Compute/virtualMachines",
                    "apiVersion": "2023-03-01",
                    "name": "[parameters('vm')]",
                    "dependsOn": ["Microsoft.Network/networkInterfaces/nic1"],
                    "properties": {},
                    "resources": [
                        {"type": "extensions", "name": "child", "apiVersion": "2023-03-01", "properties": {}}
                    ]
                },
                {
                    "type": "Microsoft.Network/networkInterfaces",
                    "apiVersion": "2023-05-01",
                    "name": "nic1",
                    "condition": "[equals(1, 1)]",
                    "properties": {}
                },
                {
                    "type": "Microsoft.Network/networkInterfaces",
                    "apiVersion": "2023-05-01",
                    "name": "skipped",
                    "condition": "[false()]"
                }
            ]
        });
        let p = plan(&t, &json!({}), &scope()).unwrap();
        let names: Vec<&str> = p.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["nic1", "vm1", "vm1/cse", "vm1/child"]);
        assert_eq!(p[2].body["location"], "local");
        assert!(p[2].body.get("dependsOn").is_none());
        assert_eq!(p[2].depends_on, vec![1]);
        assert_eq!(p[3].depends_on, vec![1]);
        assert_eq!(
            p[3].id,
            "/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1/extensions/child"
        );
    }

    #[test]
    fn plans_refuse_cycles_unknown_dependencies_and_bad_names() {
        let r = |name: &str, dep: &str| json!({"type": "Microsoft.Network/virtualNetworks", "apiVersion": "1", "name": name, "dependsOn": [dep]});
        let cyc = json!({"resources": [r("a", "b"), r("b", "a")]});
        let e = plan(&cyc, &json!({}), &scope()).unwrap_err().to_string();
        assert!(e.contains("circular"), "{e}");
        let unknown = json!({"resources": [r("a", "zzz")]});
        let e = plan(&unknown, &json!({}), &scope())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'zzz'"), "{e}");
        let bad = json!({"resources": [{"type": "Microsoft.Compute/virtualMachines/extensions", "apiVersion": "1", "name": "onlyone"}]});
        let e = plan(&bad, &json!({}), &scope()).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
        let dup = json!({"resources": [r("a", "a"), {"type": "Microsoft.Network/virtualNetworks", "apiVersion": "1", "name": "A"}]});
        let e = plan(&dup, &json!({}), &scope()).unwrap_err().to_string();
        assert!(e.contains("more than once"), "{e}");
    }
}
