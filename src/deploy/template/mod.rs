//! ARM templates, the part vmnode evaluates: parameters (with defaults and allowed values),
//! variables, template expressions (`[concat(...)]`, `[parameters('x')]`, `[resourceId(...)]`
//! …) and the resource list with nested child resources flattened and ordered by `dependsOn`.
//!
//! Evaluation is pure: the same template, parameters and scope always give the same plan.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::DeployError;

mod eval;
mod expr;
mod functions;

pub use eval::Evaluator;

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

    /// Found reading the parser and evaluator for the fuzz loop (tests/fuzz_api.rs), whose
    /// mutations include each: before the fixes, a panic, an abort (stack overflow of the
    /// request's worker thread: the whole daemon) or a request that never ends.
    #[test]
    fn hostile_expressions_are_refused_not_crashing() {
        let e = ev(json!({}), json!({}));
        // Unicode whitespace between tokens (it was stepped over one byte at a time: a panic).
        assert_eq!(ev_str(&e, "[concat(\u{a0}'a',\u{2003}'b')]"), json!("ab"));
        // 100,000 nested calls, member steps or indexes (the stack overflowed: an abort).
        let n = 100_000;
        for deep in [
            format!("[{}'a'{}]", "concat(".repeat(n), ")".repeat(n)),
            format!("[resourceGroup(){}]", ".name".repeat(n)),
            format!("[{}'a'{}]", "resourceGroup()[".repeat(n), "]".repeat(n)),
        ] {
            let err = e.eval(&json!(deep)).unwrap_err().to_string();
            assert!(err.contains("nests deeper than 64 levels"), "{err:.200}");
        }
        // Variables that refer twice to the next: 2^31 expansions before the bound.
        let mut vars = Map::new();
        for i in 0..31 {
            let next = format!("variables('v{}')", i + 1);
            vars.insert(format!("v{i}"), json!(format!("[concat({next}, {next})]")));
        }
        vars.insert("v31".into(), json!("x"));
        let e = ev(json!({"variables": vars.clone()}), json!({}));
        let err = e.eval(&json!("[variables('v0')]")).unwrap_err().to_string();
        assert!(err.contains("more than 10000 times"), "{err}");
        // ... and with a longer string at the bottom, a string that doubles to over 1 MiB.
        vars.insert("v31".into(), json!("x".repeat(4096)));
        let e = ev(json!({"variables": vars}), json!({}));
        let err = e
            .eval(&json!("[variables('v20')]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("over 1 MiB"), "{err}");
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
