//! The template expression language's syntax tree and parser.

use super::invalid;
use crate::deploy::DeployError;

/// Parses `s`, a whole `[...]` template expression (brackets included).
pub(super) fn parse(s: &str) -> Result<Expr, DeployError> {
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
