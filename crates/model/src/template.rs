//! Text with nginx variables (`$host`, `$request_uri`, `$http_x_user`, …), as
//! `auth-url` and `auth-signin` take it: parsed once at compile, expanded per request from
//! values the proxy supplies. Only the variables listed here exist; any other is an error
//! when the annotation is read, never a silent empty string.

use std::fmt;

/// A variable a template may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Var {
    /// `$host`: the request's host, without port.
    Host,
    /// `$http_host`: the `Host` field as the client sent it.
    HttpHost,
    /// `$request_uri`: the request target as it came (path and query).
    RequestUri,
    /// `$escaped_request_uri`: the same, percent-encoded for use inside a query.
    EscapedRequestUri,
    /// `$scheme`, `$pass_access_scheme`: `http` or `https`, as the client (or a trusted
    /// proxy in front) used it.
    Scheme,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$request_method`.
    RequestMethod,
    /// `$uri`: the normalised path.
    Uri,
    /// `$args`, `$query_string`: the query.
    Args,
    /// `$http_<name>`: a request field, `_` read as `-`.
    Http(Box<str>),
    /// `$arg_<name>`: a query parameter.
    Arg(Box<str>),
    /// `$cookie_<name>`.
    Cookie(Box<str>),
    /// `$request_id`: the request's ID, as sent upstream in `X-Request-ID`.
    RequestId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Box<str>),
    Var(Var),
}

/// A parsed template.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: Box<str>,
    parts: Box<[Part]>,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(at) = rest.find('$') {
            text.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("an unclosed ${{ in {source:?}"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            let var = variable(name)?;
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text).into()));
            }
            parts.push(Part::Var(var));
            rest = tail;
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text.into()));
        }
        Ok(Template {
            source: source.into(),
            parts: parts.into(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The variables the text uses.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(var) => Some(var),
            Part::Text(_) => None,
        })
    }

    /// The text with each variable replaced by what `value` says of it.
    pub fn expand<'v>(&self, mut value: impl FnMut(&Var) -> std::borrow::Cow<'v, str>) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => out.push_str(&value(var)),
            }
        }
        out
    }
}

fn variable(name: &str) -> Result<Var, String> {
    let named = |prefix: &str| {
        name.strip_prefix(prefix)
            .filter(|n| !n.is_empty())
            .map(|n| n.to_ascii_lowercase().into_boxed_str())
    };
    Ok(match name {
        "host" => Var::Host,
        "http_host" => Var::HttpHost,
        "request_uri" => Var::RequestUri,
        "escaped_request_uri" => Var::EscapedRequestUri,
        "scheme" | "pass_access_scheme" => Var::Scheme,
        "remote_addr" => Var::RemoteAddr,
        "request_method" => Var::RequestMethod,
        "uri" => Var::Uri,
        "args" | "query_string" => Var::Args,
        "request_id" => Var::RequestId,
        _ => {
            if let Some(field) = named("http_") {
                Var::Http(field.replace('_', "-").into())
            } else if named("arg_").is_some() {
                Var::Arg(name["arg_".len()..].into())
            } else if named("cookie_").is_some() {
                Var::Cookie(name["cookie_".len()..].into())
            } else {
                return Err(format!("${name} is not a variable Vestibule knows"));
            }
        }
    })
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl serde::Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

/// `text` percent-encoded but for RFC 3986's unreserved characters: nginx's
/// `$escaped_request_uri`, safe as one query parameter's value.
pub fn escape_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn expand(source: &str) -> String {
        Template::parse(source).unwrap().expand(|var| match var {
            Var::Host => Cow::Borrowed("shop.example"),
            Var::EscapedRequestUri => Cow::Owned(escape_component("/a b?x=1&y")),
            Var::Scheme => Cow::Borrowed("https"),
            Var::Http(name) => Cow::Owned(format!("<{name}>")),
            Var::Arg(name) => Cow::Owned(format!("[{name}]")),
            other => Cow::Owned(format!("{other:?}")),
        })
    }

    #[test]
    fn variables_expand_and_text_stays() {
        assert_eq!(
            expand("$scheme://$host/oauth2/start?rd=$escaped_request_uri"),
            "https://shop.example/oauth2/start?rd=%2Fa%20b%3Fx%3D1%26y"
        );
        assert_eq!(
            expand("/auth/${host}x/$http_x_user/$arg_Team"),
            "/auth/shop.examplex/<x-user>/[Team]"
        );
        assert_eq!(expand("/plain"), "/plain");
    }

    #[test]
    fn unknown_variables_are_errors() {
        for bad in ["/$nope", "/${host", "/$http_", "/$"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
