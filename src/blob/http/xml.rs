//! Just enough XML: a writer for the service's response bodies and a bounded tree reader for the
//! request bodies clients send (block lists, signed identifiers), the service's own list results
//! (the CLI) and remote error bodies (the extension downloader). Attributes are ignored.

/// Escapes text for element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A response body under construction.
pub struct Writer {
    buf: String,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            buf: String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>"),
        }
    }
    /// `<tag attrs>`; `attrs` is raw (already escaped) text such as ` ServiceEndpoint="..."`.
    pub fn open_with(&mut self, tag: &str, attrs: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(tag);
        self.buf.push_str(attrs);
        self.buf.push('>');
        self
    }
    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.open_with(tag, "")
    }
    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.buf.push_str("</");
        self.buf.push_str(tag);
        self.buf.push('>');
        self
    }
    pub fn elem(&mut self, tag: &str, text: &str) -> &mut Self {
        self.open(tag);
        self.buf.push_str(&escape(text));
        self.close(tag)
    }
    /// `<Metadata><k>v</k>…</Metadata>`, as listings show a blob's or container's metadata.
    pub fn metadata(&mut self, m: &std::collections::BTreeMap<String, String>) -> &mut Self {
        self.open("Metadata");
        for (k, v) in m {
            self.elem(k, v);
        }
        self.close("Metadata")
    }
    /// `<tag />` when `text` is None.
    pub fn opt(&mut self, tag: &str, text: Option<&str>) -> &mut Self {
        match text {
            Some(t) => self.elem(tag, t),
            None => {
                self.buf.push('<');
                self.buf.push_str(tag);
                self.buf.push_str(" />");
                self
            }
        }
    }
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.buf)
    }
}

/// An element of a parsed document. Documents are at most [`Limits::depth`] deep, so the
/// derived (recursive) `Drop`, `Clone` and `PartialEq` are bounded too.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// How much of a document a reader takes before it refuses it: what a request body may hold is
/// bounded before a single node of it is kept.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of the document.
    pub bytes: usize,
    /// Nesting: the root is at depth 1.
    pub depth: usize,
    /// Elements in all, the root included.
    pub elements: usize,
}

impl Limits {
    /// For documents from elsewhere (the service's list results, remote error bodies): deeper and
    /// larger than any the storage service sends, far from what could hurt.
    pub const ANY: Limits = Limits {
        bytes: 64 << 20,
        depth: 32,
        elements: 1 << 20,
    };
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("elements are nested more than {0} deep")]
    TooDeep(usize),
    #[error("the document has more than {0} elements")]
    TooManyElements(usize),
}

fn malformed(e: impl std::fmt::Display) -> XmlError {
    XmlError::Malformed(e.to_string())
}

/// Parses a document into its root element; `None` if it is not well formed or is beyond
/// [`Limits::ANY`].
pub fn parse(doc: &str) -> Option<Node> {
    parse_limited(doc, &Limits::ANY).ok()
}

/// Parses a document into its root element, refusing it as soon as it goes past `limits`. The
/// reader (quick-xml) is a loop over events and our stack of open elements is a `Vec`: nothing
/// recurses, and a document type declaration (and so any entity of its own) is refused.
/// Attributes are ignored; the text of an element with children is trimmed.
pub fn parse_limited(doc: &str, limits: &Limits) -> Result<Node, XmlError> {
    use quick_xml::events::Event;
    if doc.len() > limits.bytes {
        return Err(XmlError::TooLarge(limits.bytes));
    }
    let mut reader = quick_xml::Reader::from_str(doc.trim_start_matches('\u{feff}'));
    reader.config_mut().check_comments = true;
    let mut open: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut elements = 0;
    loop {
        let event = reader.read_event().map_err(malformed)?;
        match event {
            Event::Start(e) => {
                let node = new_node(&e, &mut elements, open.len(), root.is_some(), limits)?;
                open.push(node);
            }
            Event::Empty(e) => {
                let node = new_node(&e, &mut elements, open.len(), root.is_some(), limits)?;
                match open.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::End(_) => {
                // quick-xml has checked the name matches the open element.
                let mut node = open
                    .pop()
                    .ok_or_else(|| malformed("an unmatched end tag"))?;
                if !node.children.is_empty() {
                    node.text = node.text.trim().to_string();
                }
                match open.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(malformed)?;
                match open.last_mut() {
                    Some(n) => n.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(malformed("text outside the root element")),
                }
            }
            Event::CData(t) => {
                let text = std::str::from_utf8(&t).map_err(malformed)?;
                match open.last_mut() {
                    Some(n) => n.text.push_str(text),
                    None => return Err(malformed("CDATA outside the root element")),
                }
            }
            Event::DocType(_) => return Err(malformed("a document type declaration")),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !open.is_empty() {
        return Err(malformed("an element is not closed"));
    }
    root.ok_or_else(|| malformed("no root element"))
}

/// The element a start tag opens, if the limits let it in.
fn new_node(
    e: &quick_xml::events::BytesStart<'_>,
    elements: &mut usize,
    depth: usize,
    have_root: bool,
    limits: &Limits,
) -> Result<Node, XmlError> {
    *elements += 1;
    if *elements > limits.elements {
        return Err(XmlError::TooManyElements(limits.elements));
    }
    if depth >= limits.depth {
        return Err(XmlError::TooDeep(limits.depth));
    }
    if have_root {
        return Err(malformed("a second root element"));
    }
    let name = std::str::from_utf8(e.name().into_inner()).map_err(malformed)?;
    Ok(Node {
        name: name.to_string(),
        ..Node::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_block_list() {
        let doc = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<BlockList>\n  <Latest>QUFB</Latest>\n  <Committed>QkJC</Committed><Uncommitted a=\"1\">Q0ND&amp;</Uncommitted><Empty/></BlockList>";
        let n = parse(doc).unwrap();
        assert_eq!(n.name, "BlockList");
        let kids: Vec<_> = n
            .children
            .iter()
            .map(|c| (c.name.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(
            kids,
            vec![
                ("Latest", "QUFB"),
                ("Committed", "QkJC"),
                ("Uncommitted", "Q0ND&"),
                ("Empty", "")
            ]
        );
        assert!(parse("<a><b></a>").is_none());
        assert!(parse("<a></a><b></b>").is_none());
    }

    #[test]
    fn limits_are_kept_while_reading() {
        let deep = format!("{}{}", "<a>".repeat(35_000), "</a>".repeat(35_000));
        assert_eq!(
            parse_limited(&deep, &Limits::ANY),
            Err(XmlError::TooDeep(32))
        );
        assert!(parse(&deep).is_none());
        let ok = format!("{}{}", "<a>".repeat(32), "</a>".repeat(32));
        assert!(parse(&ok).is_some());
        let small = Limits {
            bytes: 100,
            depth: 4,
            elements: 3,
        };
        assert_eq!(
            parse_limited("<a><b/><c/><d/></a>", &small),
            Err(XmlError::TooManyElements(3))
        );
        assert_eq!(
            parse_limited(&" ".repeat(101), &small),
            Err(XmlError::TooLarge(100))
        );
    }

    #[test]
    fn an_error_body_reads_as_before() {
        // What the extension downloader and the CLI read: the storage service's error shape.
        let doc = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code>\
                   <Message>Server failed.\nRequestId:x</Message><!-- c --><![CDATA[<raw>]]></Error>";
        let n = parse(doc).unwrap();
        assert_eq!(n.child_text("Code"), Some("AuthenticationFailed"));
        assert_eq!(n.child_text("Message"), Some("Server failed.\nRequestId:x"));
        assert_eq!(n.text, "<raw>");
        assert!(parse("<html><body>502 Bad Gateway").is_none());
        assert!(parse("Bad Gateway").is_none());
    }

    #[test]
    fn writer_escapes() {
        let mut w = Writer::new();
        w.open("A").elem("B", "x<&>").opt("C", None).close("A");
        assert!(w.finish().ends_with("<A><B>x&lt;&amp;&gt;</B><C /></A>"));
    }
}
