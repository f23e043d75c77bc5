//! The template expression language's syntax tree and parser.

use super::invalid;
use crate::deploy::DeployError;

/// How deep an expression's tree may be: calls inside calls plus `.member`/`[index]` steps.
/// Templates nest a handful; the bound keeps the recursive parser, evaluator and `Drop` off the
/// end of a worker thread's stack however the expression was written (a request body can hold
/// a million `(`).
pub(super) const MAX_DEPTH: usize = 64;

/// Parses `s`, a whole `[...]` template expression (brackets included).
pub(super) fn parse(s: &str) -> Result<Expr, DeployError> {
    let mut p = Parser {
        src: &s[1..s.len() - 1],
        pos: 0,
        whole: s,
        depth: 0,
    };
    let e = p.expr()?;
    p.ws();
    if p.pos != p.src.len() {
        return Err(p.err("unexpected text after the expression"));
    }
    Ok(e)
}

#[derive(Debug, Clone)]
pub(super) enum Expr {
    Str(String),
    Num(i64),
    Call(String, Vec<Expr>),
    Member(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
}

struct Parser<'a> {
    src: &'a str,
    /// A byte offset, always on a character boundary.
    pos: usize,
    whole: &'a str,
    /// The depth of the tree above the expression being parsed (see [`MAX_DEPTH`]).
    depth: usize,
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
        // Unicode whitespace counts, so step by the character's length (U+00A0 is 2 bytes).
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
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
        let above = self.depth;
        let e = self.nested();
        self.depth = above;
        e
    }
    /// One level deeper: [`Parser::expr`] puts the depth back however this returns.
    fn deeper(&mut self) -> Result<(), DeployError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(&format!(
                "the expression nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }
    fn nested(&mut self) -> Result<Expr, DeployError> {
        self.deeper()?;
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
                self.deeper()?;
                self.ws();
                let key = self.ident();
                if key.is_empty() {
                    return Err(self.err("expected a property name after '.'"));
                }
                e = Expr::Member(Box::new(e), key);
            } else if self.eat('[') {
                self.deeper()?;
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
