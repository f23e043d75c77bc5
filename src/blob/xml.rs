//! Just enough XML: a writer for the service's response bodies and a small tree reader for the
//! request bodies clients send (block lists, signed identifiers). Attributes are ignored.

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

/// An element of a parsed document.
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

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';')? + i;
        let ent = &rest[i + 1..end];
        let c = match ent {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ if ent.starts_with("#x") || ent.starts_with("#X") => {
                char::from_u32(u32::from_str_radix(&ent[2..], 16).ok()?)?
            }
            _ if ent.starts_with('#') => char::from_u32(ent[1..].parse().ok()?)?,
            _ => return None,
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Parses a document into its root element; `None` if it is not well formed.
pub fn parse(doc: &str) -> Option<Node> {
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut rest = doc.trim_start_matches('\u{feff}');
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if !rest.trim().is_empty() {
                stack.last_mut()?.text.push_str(&unescape(rest)?);
            }
            break;
        };
        if lt > 0 {
            let t = unescape(&rest[..lt])?;
            stack.last_mut()?.text.push_str(&t);
        }
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<?") {
            rest = &r[r.find("?>")? + 2..];
        } else if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->")? + 3..];
        } else if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let end = r.find("]]>")?;
            stack.last_mut()?.text.push_str(&r[..end]);
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>')?;
            let name = r[..end].trim();
            let node = stack.pop()?;
            if node.name != name || stack.is_empty() {
                return None;
            }
            stack.last_mut()?.children.push(node);
            rest = &r[end + 1..];
        } else {
            let end = rest.find('>')?;
            let inner = &rest[1..end];
            let (inner, empty) = match inner.strip_suffix('/') {
                Some(i) => (i, true),
                None => (inner, false),
            };
            let name = inner.split_whitespace().next()?.to_string();
            let node = Node {
                name,
                ..Node::default()
            };
            if empty {
                stack.last_mut()?.children.push(node);
            } else {
                stack.push(node);
            }
            rest = &rest[end + 1..];
        }
    }
    if stack.len() != 1 {
        return None;
    }
    let mut root = stack.pop()?;
    if root.children.len() != 1 {
        return None;
    }
    let mut el = root.children.pop()?;
    trim_text(&mut el);
    Some(el)
}

fn trim_text(n: &mut Node) {
    if !n.children.is_empty() {
        n.text = n.text.trim().to_string();
    }
    for c in &mut n.children {
        trim_text(c);
    }
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
    fn writer_escapes() {
        let mut w = Writer::new();
        w.open("A").elem("B", "x<&>").opt("C", None).close("A");
        assert!(w.finish().ends_with("<A><B>x&lt;&amp;&gt;</B><C /></A>"));
    }
}
