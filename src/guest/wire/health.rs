//! The health report a guest posts to `/machine?comp=health` (design note §3.9), read from a
//! bounded body: waagent's `_build_health_report` and cloud-init's `GoalStateHealthReporter`
//! write the same document. Elements are matched by their local names along the path from the
//! root (`Health/Container/RoleInstanceList/Role/...`); others are skipped; the document is at
//! most [`MAX_DEPTH`] deep and each value at most [`MAX_VALUE`] bytes.

use quick_xml::events::Event;

/// How deep a report may nest.
pub const MAX_DEPTH: usize = 32;
/// The longest value kept (waagent's descriptions are at most 3686 characters).
pub const MAX_VALUE: usize = 8192;

/// What a guest said of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub incarnation: String,
    pub container_id: String,
    pub instance_id: String,
    /// `Ready` or `NotReady`.
    pub state: String,
    /// `Details/SubStatus` (`Provisioning`, `ProvisioningFailed`, ...), "" if none.
    pub sub_status: String,
    /// `Details/Description`, "" if none.
    pub description: String,
}

/// Why a body is no health report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HealthError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("nested deeper than {MAX_DEPTH} elements")]
    TooDeep,
    #[error("a value longer than {MAX_VALUE} bytes")]
    TooLong,
    #[error("the root element is not Health")]
    NotHealth,
    #[error("no {0}")]
    Missing(&'static str),
    #[error("the state {0:?} is neither Ready nor NotReady")]
    State(String),
}

/// Where a value sits, from below the root.
const FIELDS: &[(&[&str], usize)] = &[
    (&["GoalStateIncarnation"], 0),
    (&["Container", "ContainerId"], 1),
    (&["Container", "RoleInstanceList", "Role", "InstanceId"], 2),
    (
        &["Container", "RoleInstanceList", "Role", "Health", "State"],
        3,
    ),
    (
        &[
            "Container",
            "RoleInstanceList",
            "Role",
            "Health",
            "Details",
            "SubStatus",
        ],
        4,
    ),
    (
        &[
            "Container",
            "RoleInstanceList",
            "Role",
            "Health",
            "Details",
            "Description",
        ],
        5,
    ),
];

fn slot(h: &mut Health, i: usize) -> &mut String {
    match i {
        0 => &mut h.incarnation,
        1 => &mut h.container_id,
        2 => &mut h.instance_id,
        3 => &mut h.state,
        4 => &mut h.sub_status,
        _ => &mut h.description,
    }
}

/// The report in `body`; text met twice at one place is joined (so two `Role`s name no one).
pub fn parse(body: &[u8]) -> Result<Health, HealthError> {
    let mut r = quick_xml::Reader::from_reader(body);
    let mut path: Vec<String> = Vec::new();
    let mut h = Health::default();
    let mut root = None;
    loop {
        let ev = r
            .read_event()
            .map_err(|e| HealthError::Xml(e.to_string()))?;
        match ev {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if root.is_none() {
                    root = Some(name.clone());
                }
                if path.len() >= MAX_DEPTH {
                    return Err(HealthError::TooDeep);
                }
                path.push(name);
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| HealthError::Xml(e.to_string()))?;
                keep(&path, &text, &mut h)?;
            }
            Event::CData(t) => {
                keep(&path, &String::from_utf8_lossy(&t), &mut h)?;
            }
            Event::Empty(e) if root.is_none() => {
                root = Some(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if root.as_deref() != Some("Health") {
        return Err(HealthError::NotHealth);
    }
    finish(h)
}

/// Adds `text` to the value at `path` (the root first) if that is one of [`FIELDS`].
fn keep(path: &[String], text: &str, h: &mut Health) -> Result<(), HealthError> {
    let Some((_, below)) = path.split_first() else {
        return Ok(());
    };
    let Some(&(_, i)) = FIELDS.iter().find(|(p, _)| {
        p.len() == below.len() && p.iter().zip(below).all(|(a, b)| *a == b.as_str())
    }) else {
        return Ok(());
    };
    let v = slot(h, i);
    if v.len() + text.len() > MAX_VALUE {
        return Err(HealthError::TooLong);
    }
    v.push_str(text);
    Ok(())
}

/// The report with its values trimmed, checked for what a report must say.
fn finish(mut h: Health) -> Result<Health, HealthError> {
    for i in 0..6 {
        let v = slot(&mut h, i);
        *v = v.trim().to_string();
    }
    if h.container_id.is_empty() {
        return Err(HealthError::Missing("ContainerId"));
    }
    if h.instance_id.is_empty() {
        return Err(HealthError::Missing("InstanceId"));
    }
    match h.state.as_str() {
        "Ready" | "NotReady" => Ok(h),
        "" => Err(HealthError::Missing("State")),
        s => Err(HealthError::State(s.to_string())),
    }
}
