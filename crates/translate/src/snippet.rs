//! The safe subset of nginx snippets (`configuration-snippet`, `server-snippet`): a strict
//! reader that maps a few directives to typed rules and refuses everything else. Nothing of
//! a snippet is ever executed or pasted anywhere; a snippet maps whole or not at all, and
//! the refusal names the directive and its line.
//!
//! The subset: `more_set_headers`, `more_clear_headers`, `add_header … [always]`,
//! `proxy_hide_header` (response fields); `proxy_set_header`, `more_set_input_headers`,
//! `more_clear_input_headers` (request fields); `return CODE [text|URL]` and `return URL`;
//! `allow` and `deny` in the orders an allow list or a deny list can express. Values may use
//! the variables of header rules ([`HeaderOp::VARIABLES`]); anything else (`if`, a block, an
//! option such as `more_set_headers -s`, another variable) refuses the snippet.

use std::borrow::Cow;

use vestibule_model::{Cidr, Fixed, HeaderOp, Redirect, ResponseOp, SourceRanges};

/// Longest snippet read; a longer one is refused before any work.
const MAX_LEN: usize = 64 << 10;

/// What a snippet maps to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snippet {
    /// Fields of the request sent upstream.
    pub request: Vec<HeaderOp>,
    /// Fields of the response.
    pub response: Vec<ResponseOp>,
    /// `return`: a redirect or a fixed answer.
    pub redirect: Option<Redirect>,
    pub fixed: Option<Fixed>,
    /// `allow` / `deny`.
    pub access: Option<SourceRanges>,
    /// Directives mapped.
    pub directives: usize,
}

/// Why a snippet does not map: the directive, its line (from 1), and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnippetError {
    pub line: usize,
    pub directive: String,
    pub why: String,
}

impl std::fmt::Display for SnippetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.directive.is_empty() {
            write!(f, "line {}: {}", self.line, self.why)
        } else {
            write!(f, "line {}: {}: {}", self.line, self.directive, self.why)
        }
    }
}

/// Directives that protect something: a snippet holding one that cannot be honoured must
/// close its Ingress rather than serve it open.
const PROTECTING: &[&str] = &["allow", "deny", "satisfy"];

/// Whether the snippet names a protecting directive (`allow`, `deny`, `auth_*`, `limit_*`,
/// `satisfy`, `*_by_lua*`) anywhere, read leniently so that even a snippet that does not
/// parse is judged.
pub fn protects(text: &str) -> bool {
    text.split(['\n', ';', '{', '}'])
        .filter_map(|chunk| chunk.split_whitespace().next())
        .any(|word| {
            PROTECTING.contains(&word)
                || word.starts_with("auth_")
                || word.starts_with("limit_")
                || word.contains("_by_lua")
        })
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(Cow<'a, str>),
    End,
    Open,
    Close,
}

/// The tokens of `text`, each with its line.
fn tokens(text: &str) -> Result<Vec<(Token<'_>, usize)>, SnippetError> {
    let fail = |line: usize, why: &str| SnippetError {
        line,
        directive: String::new(),
        why: why.to_owned(),
    };
    let bytes = text.as_bytes();
    let (mut out, mut at, mut line) = (Vec::new(), 0, 1);
    while at < bytes.len() {
        match bytes[at] {
            b'\n' => {
                line += 1;
                at += 1;
            }
            b' ' | b'\t' | b'\r' => at += 1,
            b'#' => {
                while at < bytes.len() && bytes[at] != b'\n' {
                    at += 1;
                }
            }
            b';' => {
                out.push((Token::End, line));
                at += 1;
            }
            b'{' => {
                out.push((Token::Open, line));
                at += 1;
            }
            b'}' => {
                out.push((Token::Close, line));
                at += 1;
            }
            quote @ (b'"' | b'\'') => {
                let start_line = line;
                let mut word = String::new();
                at += 1;
                loop {
                    let Some(&b) = bytes.get(at) else {
                        return Err(fail(start_line, "a quoted string is not closed"));
                    };
                    match b {
                        b'\\' => {
                            let Some(&next) = bytes.get(at + 1) else {
                                return Err(fail(line, "a quoted string is not closed"));
                            };
                            match next {
                                b'"' | b'\'' | b'\\' => word.push(char::from(next)),
                                b'n' | b'r' | b't' => {
                                    return Err(fail(line, "a control character in a string"));
                                }
                                _ => {
                                    word.push('\\');
                                    // A multi-byte character after a backslash is kept
                                    // whole by taking it from the text, not the bytes.
                                    let rest = &text[at + 1..];
                                    let c = rest.chars().next().unwrap_or('\\');
                                    word.push(c);
                                    at += c.len_utf8() - 1;
                                }
                            }
                            at += 2;
                        }
                        b'\n' => return Err(fail(line, "a line break in a quoted string")),
                        b if b == quote => {
                            at += 1;
                            break;
                        }
                        _ => {
                            let rest = &text[at..];
                            let c = rest.chars().next().unwrap_or(' ');
                            word.push(c);
                            at += c.len_utf8();
                        }
                    }
                }
                out.push((Token::Word(Cow::Owned(word)), start_line));
            }
            _ => {
                let start = at;
                while at < bytes.len()
                    && !matches!(
                        bytes[at],
                        b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' | b'}' | b'"' | b'\'' | b'#'
                    )
                {
                    at += 1;
                }
                out.push((Token::Word(Cow::Borrowed(&text[start..at])), line));
            }
        }
    }
    Ok(out)
}

/// Reads a snippet. `Ok` only when every directive maps.
pub fn parse(text: &str) -> Result<Snippet, SnippetError> {
    if text.len() > MAX_LEN {
        return Err(SnippetError {
            line: 1,
            directive: String::new(),
            why: format!("longer than {MAX_LEN} bytes"),
        });
    }
    let tokens = tokens(text)?;
    let mut snippet = Snippet::default();
    let mut access = Vec::new();
    let mut words: Vec<&str> = Vec::new();
    let mut start = 1;
    for (token, line) in &tokens {
        if words.is_empty() {
            start = *line;
        }
        match token {
            Token::Word(word) => words.push(word),
            Token::End => {
                let (name, args) = words.split_first().ok_or_else(|| SnippetError {
                    line: *line,
                    directive: String::new(),
                    why: "an empty directive (a stray ;)".into(),
                })?;
                directive(name, args, &mut snippet, &mut access).map_err(|why| SnippetError {
                    line: start,
                    directive: (*name).to_owned(),
                    why,
                })?;
                snippet.directives += 1;
                words.clear();
            }
            Token::Open | Token::Close => {
                return Err(SnippetError {
                    line: *line,
                    directive: words.first().map_or(String::new(), |w| (*w).to_owned()),
                    why: "a block ({ … }): blocks such as location and if are not in the subset"
                        .into(),
                });
            }
        }
    }
    if let Some(name) = words.first() {
        return Err(SnippetError {
            line: start,
            directive: (*name).to_owned(),
            why: "the directive does not end with ;".into(),
        });
    }
    if !access.is_empty() {
        snippet.access = Some(ranges(&access).map_err(|why| SnippetError {
            line: 1,
            directive: "allow/deny".into(),
            why,
        })?);
    }
    Ok(snippet)
}

/// One `allow` or `deny`: `None` for `all`.
type Rule = (bool, Option<Cidr>);

fn directive(
    name: &str,
    args: &[&str],
    snippet: &mut Snippet,
    access: &mut Vec<Rule>,
) -> Result<(), String> {
    let no_options = |args: &[&str]| match args.iter().find(|a| a.starts_with('-')) {
        Some(option) => Err(format!("the option {option} is not in the subset")),
        None => Ok(()),
    };
    let response = |op| ResponseOp { op, always: true };
    match name {
        "more_set_headers" | "more_set_input_headers" => {
            no_options(args)?;
            if args.is_empty() {
                return Err("it needs \"Name: value\"".into());
            }
            for arg in args {
                let (field, value) = arg
                    .split_once(':')
                    .ok_or_else(|| format!("{arg:?} is not \"Name: value\""))?;
                let op = match value.trim() {
                    "" => HeaderOp::remove(field)?,
                    value => HeaderOp::set(field, value)?,
                };
                match name {
                    "more_set_headers" => snippet.response.push(response(op)),
                    _ => snippet.request.push(op),
                }
            }
        }
        "more_clear_headers" | "more_clear_input_headers" | "proxy_hide_header" => {
            no_options(args)?;
            if args.is_empty() || (name == "proxy_hide_header" && args.len() != 1) {
                return Err("it needs header names".into());
            }
            for arg in args {
                if arg.contains('*') {
                    return Err(format!("the wildcard in {arg:?} is not in the subset"));
                }
                let op = HeaderOp::remove(arg)?;
                match name {
                    "more_clear_input_headers" => snippet.request.push(op),
                    _ => snippet.response.push(response(op)),
                }
            }
        }
        "add_header" => {
            let always = match args {
                [_, _] => false,
                [_, _, "always"] => true,
                _ => return Err("it takes a name, a value and optionally always".into()),
            };
            let op = HeaderOp::add(args[0], args[1])?;
            snippet.response.push(ResponseOp { op, always });
        }
        "proxy_set_header" => {
            let [field, value] = args else {
                return Err("it takes a name and a value".into());
            };
            snippet.request.push(match value.trim() {
                "" => HeaderOp::remove(field)?,
                value => HeaderOp::set(field, value)?,
            });
        }
        "return" => answer(args, snippet)?,
        "allow" | "deny" => {
            let [target] = args else {
                return Err("it takes one address, range or all".into());
            };
            let target = match *target {
                "all" => None,
                cidr => Some(Cidr::parse(cidr)?),
            };
            access.push((name == "allow", target));
        }
        "if" => return Err("conditions are not in the subset".into()),
        _ => return Err("not in the subset Vestibule maps".into()),
    }
    Ok(())
}

/// `return CODE [text|URL]` or `return URL`.
fn answer(args: &[&str], snippet: &mut Snippet) -> Result<(), String> {
    if snippet.redirect.is_some() || snippet.fixed.is_some() {
        return Err("a second return, which nginx would never reach".into());
    }
    if args.iter().any(|a| a.contains('$')) {
        return Err("variables in return are not in the subset".into());
    }
    let is_url = |a: &str| a.starts_with("http://") || a.starts_with("https://");
    let (code, text) = match args {
        [url] if is_url(url) => (302, Some(*url)),
        [code] => (parse_code(code)?, None),
        [code, text] => (parse_code(code)?, Some(*text)),
        _ => return Err("it takes a status and a text or URL".into()),
    };
    if text.is_some_and(|t| t.bytes().any(|b| b.is_ascii_control())) {
        return Err("a control character in the text".into());
    }
    match code {
        301 | 302 | 303 | 307 | 308 => {
            let location = text.ok_or("a redirect needs a URL")?;
            snippet.redirect = Some(Redirect {
                code,
                location: location.into(),
            });
        }
        _ => {
            snippet.fixed = Some(Fixed {
                code,
                body: text.unwrap_or("").into(),
            });
        }
    }
    Ok(())
}

fn parse_code(code: &str) -> Result<u16, String> {
    match code.parse::<u16>() {
        // nginx's own codes (444 drops the connection, 494 to 499 are its internal ones)
        // mean nothing on the wire.
        Ok(444 | 494..=499) | Err(_) => Err(format!(
            "{code:?} is not a status Vestibule sends (444, which drops the connection, and \
             nginx's other own codes are not in the subset)"
        )),
        Ok(code @ 200..=599) => Ok(code),
        Ok(_) => Err(format!("{code:?} is not a status from 200 to 599")),
    }
}

/// `allow`/`deny` in an order an allow list or a deny list expresses: allows then
/// `deny all`; or denies, then optionally `allow all`.
fn ranges(rules: &[Rule]) -> Result<SourceRanges, String> {
    let everyone = || -> Vec<Cidr> {
        ["0.0.0.0/0", "::/0"]
            .iter()
            .filter_map(|c| Cidr::parse(c).ok())
            .collect()
    };
    let unexpressible = || {
        "this order of allow and deny cannot be expressed as an allow list then deny all, \
         or a deny list then allow all"
            .to_owned()
    };
    let (last, body) = rules.split_last().ok_or_else(unexpressible)?;
    let cidrs = |allow: bool| -> Option<Vec<Cidr>> {
        body.iter()
            .map(|(a, c)| if *a == allow { *c } else { None })
            .collect()
    };
    match *last {
        (false, None) => match cidrs(true) {
            Some(allow) if allow.is_empty() => Ok(SourceRanges {
                allow: Vec::new(),
                deny: everyone(),
            }),
            Some(allow) => Ok(SourceRanges {
                allow,
                deny: Vec::new(),
            }),
            None => Err(unexpressible()),
        },
        (true, None) => cidrs(false)
            .map(|deny| SourceRanges {
                allow: Vec::new(),
                deny,
            })
            .ok_or_else(unexpressible),
        (false, Some(last)) => {
            let mut deny = cidrs(false).ok_or_else(unexpressible)?;
            deny.push(last);
            Ok(SourceRanges {
                allow: Vec::new(),
                deny,
            })
        }
        (true, Some(_)) => Err(unexpressible()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ops: &[ResponseOp]) -> Vec<(&str, bool)> {
        ops.iter().map(|r| (r.op.name(), r.always)).collect()
    }

    #[test]
    fn the_common_snippets_map() {
        let s = parse(
            r#"
            # security headers
            more_set_headers "X-Frame-Options: DENY" "X-XSS-Protection: 1; mode=block";
            more_set_headers "Server: ";
            add_header Strict-Transport-Security "max-age=31536000" always;
            add_header X-Cache $http_x_cache;
            proxy_hide_header X-Powered-By;
            more_clear_headers 'X-Debug';
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Empty "";
            more_set_input_headers "X-Id: $request_id";
            more_clear_input_headers Cookie;
            "#,
        )
        .unwrap();
        assert_eq!(s.directives, 10);
        assert_eq!(
            names(&s.response),
            [
                ("x-frame-options", true),
                ("x-xss-protection", true),
                ("server", true),
                ("strict-transport-security", true),
                ("x-cache", false),
                ("x-powered-by", true),
                ("x-debug", true),
            ]
        );
        assert_eq!(s.response[2].op, HeaderOp::remove("Server").unwrap());
        assert!(matches!(s.response[3].op, HeaderOp::Add { .. }));
        let request: Vec<&str> = s.request.iter().map(HeaderOp::name).collect();
        assert_eq!(request, ["x-forwarded-proto", "x-empty", "x-id", "cookie"]);
        assert_eq!(s.request[1], HeaderOp::remove("x-empty").unwrap());
    }

    #[test]
    fn returns_and_access_lists_map_when_expressible() {
        let s = parse("return 301 https://example.com/new;").unwrap();
        assert_eq!(s.redirect.unwrap().code, 301);
        let s = parse("return https://example.com/;").unwrap();
        assert_eq!(s.redirect.unwrap().code, 302);
        let s = parse("return 403;").unwrap();
        assert_eq!(s.fixed.unwrap().code, 403);
        let s = parse("return 200 'ok';").unwrap();
        assert_eq!(&*s.fixed.unwrap().body, "ok");
        let s = parse("allow 10.0.0.0/8;\nallow 192.0.2.1;\ndeny all;").unwrap();
        assert_eq!(s.access.as_ref().unwrap().allow.len(), 2);
        assert!(s.access.unwrap().deny.is_empty());
        let s = parse("deny 203.0.113.0/24; allow all;").unwrap();
        assert_eq!(s.access.unwrap().deny.len(), 1);
        let s = parse("deny 203.0.113.0/24;").unwrap();
        assert_eq!(s.access.unwrap().deny.len(), 1);
        let s = parse("deny all;").unwrap();
        let everyone = s.access.unwrap();
        assert!(!everyone.admits("192.0.2.1".parse().unwrap()));
        assert!(!everyone.admits("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn anything_else_refuses_the_whole_snippet_naming_directive_and_line() {
        for (text, line, directive) in [
            (
                "more_set_headers 'A: b';\nrewrite ^ /x break;",
                2,
                "rewrite",
            ),
            ("if ($scheme = http) { return 301 https://x; }", 1, "if"),
            ("location /metrics {\n deny all;\n}", 1, "location"),
            ("more_set_headers -s 404 'X: y';", 1, "more_set_headers"),
            ("more_clear_headers 'X-Hidden-*';", 1, "more_clear_headers"),
            ("proxy_set_header X $cookie_session;", 1, "proxy_set_header"),
            ("add_header X y sometimes;", 1, "add_header"),
            ("return 444;", 1, "return"),
            ("return 301;", 1, "return"),
            ("return 200 $host;", 1, "return"),
            ("return 403; return 404;", 1, "return"),
            (
                "allow 10.0.0.0/8; deny 10.1.0.0/16; allow all;",
                1,
                "allow/deny",
            ),
            ("allow 10.0.0.0/33; deny all;", 1, "allow"),
            ("proxy_set_header X y", 1, "proxy_set_header"),
            ("more_set_headers \"X: y", 1, ""),
            ("more_set_headers \"X: a\\nInjected: b\";", 1, ""),
            (";", 1, ""),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(
                (error.line, error.directive.as_str()),
                (line, directive),
                "{text}"
            );
        }
        assert!(protects("location /x { deny all; }"));
        assert!(protects("auth_request /auth;"));
        assert!(!protects("more_set_headers 'X-Deny: all';"));
    }
}
