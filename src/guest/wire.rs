//! The WireServer (`http://168.63.129.16:80`) as a pure function: a request (method, path,
//! query, headers, body) and a way to find the calling VM in, a response out, and the health
//! report the guest posted if it posted one (design note §3). Served now:
//!
//! - `GET /?comp=versions`: the versions document (§3.2), `2012-11-30` in `Supported`;
//! - `GET /machine[/]?comp=goalstate`: the goal state (§3.3), incarnation 1, the container and
//!   role instance [`Identity::of`] the VM, the HostingEnvironmentConfig and SharedConfig URLs
//!   in the cloud's shape (no default namespace, no whitespace in URL text);
//! - `GET /machine/<ContainerId>/<InstanceId>?comp=config&type=hostingEnvironmentConfig|sharedConfig`:
//!   those documents (§3.4, §3.5), only for the caller's own container and instance;
//! - `POST /machine[/]?comp=health`: the health report (§3.9), parsed by [`health::parse`],
//!   200 with an empty body; a report naming another container or instance is 403;
//! - `POST /machine[/]?comp=telemetrydata` and `POST /HealthService`: 200, the body discarded;
//! - anything else 404; a caller no VM holds is 403 (except `comp=versions`).
//!
//! Every value put in a document is escaped. The socket loop (`guest::http`) bounds the body
//! at [`MAX_BODY`].

pub mod health;

use quick_xml::escape::escape;
use sha2::{Digest, Sha256};

use super::imds::{Facts, Request};

pub use health::Health;

/// The largest body read (waagent's telemetry posts are at most ~63 KiB).
pub const MAX_BODY: usize = 128 * 1024;
/// The WireServer's address as the documents name it.
const WIRE_URL: &str = "http://168.63.129.16:80";
/// The goal state's incarnation: nothing changes it yet.
pub const INCARNATION: &str = "1";
pub const XML: &str = "text/xml; charset=utf-8";

/// What the WireServer answers (IMDS's shape: status, content type, body).
pub use super::imds::Response;

impl Response {
    fn xml(body: String) -> Response {
        Response {
            status: 200,
            content_type: XML,
            body,
        }
    }

    /// An empty answer with `status`.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: XML,
            body: String::new(),
        }
    }
}

/// One answer, and the health report it accepted (for the caller to log and record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub response: Response,
    pub health: Option<Health>,
}

impl From<Response> for Answer {
    fn from(response: Response) -> Answer {
        Answer {
            response,
            health: None,
        }
    }
}

/// A VM as the WireServer names it: its container and role instance, derived from its vmId.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// A GUID derived from the vmId (stable across restarts).
    pub container_id: String,
    /// `<deployment>.<role name>`, the deployment being the vmId's hex digits.
    pub instance_id: String,
    /// The deployment id (the vmId without dashes, lower case).
    pub deployment: String,
    /// The role's name (the VM's name).
    pub role: String,
}

impl Identity {
    /// The VM's container and role instance, from its vmId and name (pure, deterministic).
    pub fn of(f: &Facts) -> Identity {
        let digest = Sha256::digest(format!("vmnode-container:{}", f.vm_id));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let container_id = uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string();
        let deployment: String = f
            .vm_id
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect::<String>()
            .to_ascii_lowercase();
        Identity {
            container_id,
            instance_id: format!("{deployment}.{}", f.name),
            deployment,
            role: f.name.clone(),
        }
    }

    /// The URL of one of the instance's configuration documents.
    fn config_url(&self, kind: &str) -> String {
        format!(
            "{WIRE_URL}/machine/{}/{}?comp=config&type={kind}&incarnation={INCARNATION}",
            self.container_id, self.instance_id
        )
    }
}

/// The query's parameters (undecoded; the WireServer's are plain words), names lower case.
fn params(query: &str) -> Vec<(String, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_ascii_lowercase(), v)
        })
        .collect()
}

fn param<'a>(ps: &'a [(String, &'a str)], name: &str) -> Option<&'a str> {
    ps.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// The answer to `req` with `body`; `caller` finds the calling VM (`None`: nobody's address).
pub fn answer(req: &Request, body: &[u8], caller: impl FnOnce() -> Option<Facts>) -> Answer {
    let ps = params(&req.query);
    let comp = param(&ps, "comp").unwrap_or("");
    let path = req.path.as_str();
    let machine = matches!(path, "/machine" | "/machine/");
    match (req.method.as_str(), path, comp) {
        ("GET", "/", "versions") => Response::xml(versions()).into(),
        ("POST", "/HealthService", _) => Response::empty(200).into(),
        ("POST", _, "telemetrydata") if machine => Response::empty(200).into(),
        ("GET", _, "goalstate") if machine => match caller() {
            Some(f) => Response::xml(goal_state(&Identity::of(&f))).into(),
            None => Response::empty(403).into(),
        },
        ("POST", _, "health") if machine => match caller() {
            Some(f) => report(&Identity::of(&f), body),
            None => Response::empty(403).into(),
        },
        ("GET", _, "config") if path.starts_with("/machine/") => {
            let Some(f) = caller() else {
                return Response::empty(403).into();
            };
            config(&Identity::of(&f), path, param(&ps, "type").unwrap_or("")).into()
        }
        _ => Response::empty(404).into(),
    }
}

/// A configuration document of the caller's own instance; another's is 403, an unknown type 404.
fn config(id: &Identity, path: &str, kind: &str) -> Response {
    let own = format!("/machine/{}/{}", id.container_id, id.instance_id);
    if path.trim_end_matches('/') != own {
        return Response::empty(403);
    }
    match kind {
        "hostingEnvironmentConfig" => Response::xml(hosting_environment(id)),
        "sharedConfig" => Response::xml(shared_config(id)),
        _ => Response::empty(404),
    }
}

/// A health report from `id`: 200 and the report, 400 if it is no report, 403 if it names
/// another container or instance.
fn report(id: &Identity, body: &[u8]) -> Answer {
    match health::parse(body) {
        Err(e) => {
            tracing::debug!(error = %e, "WireServer: a health report that cannot be read (400)");
            Response::empty(400).into()
        }
        Ok(h) if h.container_id != id.container_id || h.instance_id != id.instance_id => {
            tracing::warn!(container = %h.container_id, instance = %h.instance_id,
                own = %id.instance_id, "WireServer: a health report for another VM; refused (403)");
            Response::empty(403).into()
        }
        Ok(h) => Answer {
            response: Response::empty(200),
            health: Some(h),
        },
    }
}

const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n";

/// The versions document (§3.2).
pub fn versions() -> String {
    format!(
        "{DECLARATION}<Versions><Preferred><Version>2015-04-05</Version></Preferred><Supported>\
         <Version>2015-04-05</Version><Version>2012-11-30</Version>\
         <Version>2010-12-15</Version></Supported></Versions>"
    )
}

/// The goal state (§3.3) of `id`: no default namespace, no whitespace in the URLs' text.
pub fn goal_state(id: &Identity) -> String {
    let e = |s: &str| escape(s).into_owned();
    let config_name = format!("{d}.0.{d}.0.{r}.1.xml", d = id.deployment, r = id.role);
    format!(
        "{DECLARATION}<GoalState xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:noNamespaceSchemaLocation=\"goalstate10.xsd\">\n\
         <Version>2012-11-30</Version>\n<Incarnation>{INCARNATION}</Incarnation>\n\
         <Machine><ExpectedState>Started</ExpectedState>\
         <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>\
         <LBProbePorts><Port>16001</Port></LBProbePorts>\
         <ExpectHealthReport>FALSE</ExpectHealthReport></Machine>\n\
         <Container><ContainerId>{c}</ContainerId><RoleInstanceList><RoleInstance>\
         <InstanceId>{i}</InstanceId><State>Started</State><Configuration>\
         <HostingEnvironmentConfig>{h}</HostingEnvironmentConfig>\
         <SharedConfig>{s}</SharedConfig><ConfigName>{n}</ConfigName>\
         </Configuration></RoleInstance></RoleInstanceList></Container>\n</GoalState>\n",
        c = e(&id.container_id),
        i = e(&id.instance_id),
        h = e(&id.config_url("hostingEnvironmentConfig")),
        s = e(&id.config_url("sharedConfig")),
        n = e(&config_name),
    )
}

/// The HostingEnvironmentConfig (§3.4): waagent reads the role and deployment names.
pub fn hosting_environment(id: &Identity) -> String {
    let e = |s: &str| escape(s).into_owned();
    format!(
        "{DECLARATION}<HostingEnvironmentConfig version=\"1.0.0.0\" \
         goalStateIncarnation=\"{INCARNATION}\"><Deployment name=\"{d}\" guid=\"{{{c}}}\" \
         incarnation=\"0\"/><Incarnation number=\"{INCARNATION}\" instance=\"{r}\" \
         guid=\"{{{c}}}\"/><Role guid=\"{{{c}}}\" name=\"{r}\" hostingEnvironmentVersion=\"1\" \
         software=\"\" softwareType=\"ApplicationPackage\" entryPoint=\"\" parameters=\"\" \
         settleTimeSeconds=\"10\"/></HostingEnvironmentConfig>\n",
        d = e(&id.deployment),
        c = e(&id.container_id),
        r = e(&id.role),
    )
}

/// The SharedConfig (§3.5): kept verbatim by the agent; the minimal shape with the names.
pub fn shared_config(id: &Identity) -> String {
    let e = |s: &str| escape(s).into_owned();
    format!(
        "{DECLARATION}<SharedConfig version=\"1.0.0.0\" goalStateIncarnation=\"{INCARNATION}\">\
         <Deployment name=\"{d}\" guid=\"{{{c}}}\" incarnation=\"0\"/>\
         <Incarnation number=\"{INCARNATION}\" instance=\"{r}\" guid=\"{{{c}}}\"/>\
         <Role guid=\"{{{c}}}\" name=\"{r}\" settleTimeSeconds=\"10\"/></SharedConfig>\n",
        d = e(&id.deployment),
        c = e(&id.container_id),
        r = e(&id.role),
    )
}

#[cfg(test)]
mod tests;
