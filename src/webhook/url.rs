//! Which URLs a webhook endpoint may have, checked when the endpoint is
//! created ([`check`]) and again by the delivery before each attempt
//! ([`parse`]; the delivery's resolver checks a name's addresses as it
//! connects).
//!
//! A URL is parsed as a browser parses it (WHATWG, the `url` crate), so the
//! host checked is the host a client connects to: `http://0x7f.1/` and
//! `http://2130706433/` are 127.0.0.1, `http://[::ffff:7f00:1]/` is too.
//! The rules: at most [`MAX_LEN`] bytes; `https` only (`http` too when
//! private addresses are allowed, for development and tests); a host; no
//! user name or password (a secret in a URL ends up in logs); no fragment
//! (nothing sends one). A host that is an address must be public
//! ([`super::address::is_public`]); a host that is a name must resolve, and
//! every address it resolves to must be public, unless private addresses
//! are allowed. The endpoint keeps the URL as parsed (its serialisation),
//! which is what it is delivered to.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ::url::{Host, Url};

use super::address::is_public;

/// The longest URL taken, in bytes (as given, and as parsed).
pub const MAX_LEN: usize = 2048;

/// How long a name may take to resolve before it counts as unresolved.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a URL is refused: each message completes "the URL …" (it is the
/// `url` field's message of a `422`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("must be at most {MAX_LEN} bytes")]
    TooLong,
    #[error("is not a URL: {0}")]
    Malformed(String),
    #[error("must be an https URL (deliveries are sent over TLS only)")]
    NotHttps,
    #[error("must be an http or https URL")]
    NotHttp,
    #[error("must name a host")]
    NoHost,
    #[error("must not carry a user name or password (use the signing secret to authenticate deliveries)")]
    Userinfo,
    #[error("must not have a fragment (#…): deliveries are sent to the URL without one")]
    Fragment,
    #[error(
        "names the address {0}, which is not public: endpoints must be reachable on the public internet, \
         never a loopback, private, link-local or reserved address"
    )]
    PrivateAddress(IpAddr),
    #[error(
        "names a host that resolves to {0}, which is not public: endpoints must be reachable on the public \
         internet, never a loopback, private, link-local or reserved address"
    )]
    PrivateName(IpAddr),
    #[error("names a host that does not resolve")]
    Unresolved,
}

/// A URL that passed the checks that need no resolution, with the host to
/// resolve if it is a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub url: Url,
    /// The host, if it is a name (`None`: an address, checked already).
    pub name: Option<String>,
    /// The port a delivery connects to (the scheme's when none is given).
    pub port: u16,
}

/// Parses `text` and checks everything but the addresses a name resolves to.
pub fn parse(text: &str, allow_private: bool) -> Result<Parsed, Refused> {
    if text.len() > MAX_LEN {
        return Err(Refused::TooLong);
    }
    let url = Url::parse(text).map_err(|e| Refused::Malformed(e.to_string()))?;
    if url.as_str().len() > MAX_LEN {
        return Err(Refused::TooLong);
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ if allow_private => return Err(Refused::NotHttp),
        _ => return Err(Refused::NotHttps),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Userinfo);
    }
    if url.fragment().is_some() {
        return Err(Refused::Fragment);
    }
    let port = url.port_or_known_default().ok_or(Refused::NoHost)?;
    let name = match url.host() {
        None => return Err(Refused::NoHost),
        Some(Host::Domain("")) => return Err(Refused::NoHost),
        Some(Host::Domain(name)) => Some(name.to_owned()),
        Some(Host::Ipv4(ip)) => literal(IpAddr::V4(ip), allow_private)?,
        Some(Host::Ipv6(ip)) => literal(IpAddr::V6(ip), allow_private)?,
    };
    Ok(Parsed { url, name, port })
}

fn literal(ip: IpAddr, allow_private: bool) -> Result<Option<String>, Refused> {
    if allow_private || is_public(ip) {
        Ok(None)
    } else {
        Err(Refused::PrivateAddress(ip))
    }
}

/// Whether every address a name resolved to may be reached: there is at
/// least one, and (unless private addresses are allowed) each is public.
pub fn check_addresses(
    addresses: impl IntoIterator<Item = IpAddr>,
    allow_private: bool,
) -> Result<(), Refused> {
    let mut any = false;
    for ip in addresses {
        any = true;
        if !allow_private && !is_public(ip) {
            return Err(Refused::PrivateName(ip));
        }
    }
    if any {
        Ok(())
    } else {
        Err(Refused::Unresolved)
    }
}

/// Every address `name` resolves to (the system resolver: blocking).
fn lookup(name: &str, port: u16) -> Vec<SocketAddr> {
    (name, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default()
}

/// Checks `text` and returns the URL as parsed with the addresses a
/// delivery may connect to (each checked): the address it names, or every
/// address its name resolves to (within [`RESOLVE_TIMEOUT`], on a blocking
/// thread).
pub async fn resolve(text: &str, allow_private: bool) -> Result<(Url, Vec<SocketAddr>), Refused> {
    let Parsed { url, name, port } = parse(text, allow_private)?;
    let Some(name) = name else {
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Err(Refused::NoHost),
        };
        return Ok((url, vec![SocketAddr::new(ip, port)]));
    };
    let looked_up = tokio::task::spawn_blocking(move || lookup(&name, port));
    let addresses = match tokio::time::timeout(RESOLVE_TIMEOUT, looked_up).await {
        Ok(Ok(addresses)) => addresses,
        // Timed out, or the lookup's thread failed.
        _ => Vec::new(),
    };
    check_addresses(addresses.iter().map(SocketAddr::ip), allow_private)?;
    Ok((url, addresses))
}

/// Checks `text` as an endpoint URL; the URL as parsed (what is stored).
pub async fn check(text: &str, allow_private: bool) -> Result<Url, Refused> {
    resolve(text, allow_private).await.map(|(url, _)| url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    async fn production(text: &str) -> Result<String, Refused> {
        check(text, false).await.map(|u| u.to_string())
    }

    #[tokio::test]
    async fn public_address_literals_are_taken_and_kept_as_parsed() {
        assert_eq!(
            production("https://93.184.216.34/hooks?x=1").await,
            Ok("https://93.184.216.34/hooks?x=1".into())
        );
        assert_eq!(
            production("HTTPS://[2606:4700:4700::1111]:8443/h").await,
            Ok("https://[2606:4700:4700::1111]:8443/h".into())
        );
        // An IPv4-mapped public address is public.
        assert!(production("https://[::ffff:8.8.8.8]/").await.is_ok());
    }

    #[tokio::test]
    async fn private_literals_are_refused_however_they_are_written() {
        for (text, ip) in [
            ("https://127.0.0.1/", "127.0.0.1"),
            ("https://0x7f.1/", "127.0.0.1"),
            ("https://2130706433/", "127.0.0.1"),
            ("https://0177.0.0.1/", "127.0.0.1"),
            ("https://10.1.2.3/", "10.1.2.3"),
            (
                "https://169.254.169.254/latest/meta-data",
                "169.254.169.254",
            ),
            ("https://[::1]/", "::1"),
            ("https://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
            ("https://[fd00::1]/", "fd00::1"),
            ("https://0.0.0.0/", "0.0.0.0"),
        ] {
            assert_eq!(
                production(text).await,
                Err(Refused::PrivateAddress(ip.parse().unwrap())),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn http_is_refused_in_production_even_to_a_public_address() {
        for text in [
            "http://93.184.216.34/",
            "http://[::1]/",
            "http://169.254.169.254/",
            "http://example.com/",
        ] {
            assert_eq!(production(text).await, Err(Refused::NotHttps), "{text}");
        }
        for text in ["ftp://93.184.216.34/", "file:///etc/passwd", "javascript:1"] {
            assert_eq!(production(text).await, Err(Refused::NotHttps), "{text}");
            assert_eq!(check(text, true).await, Err(Refused::NotHttp), "{text}");
        }
    }

    #[tokio::test]
    async fn a_name_is_judged_by_every_address_it_resolves_to() {
        // localhost resolves to loopback (127.0.0.1, and ::1 where listed).
        match production("https://localhost/").await {
            Err(Refused::PrivateName(ip)) => assert!(ip.is_loopback(), "{ip}"),
            other => panic!("localhost: {other:?}"),
        }
        assert_eq!(
            production("https://nowhere.invalid/").await,
            Err(Refused::Unresolved)
        );
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(check_addresses([public], false), Ok(()));
        assert_eq!(
            check_addresses([public, private], false),
            Err(Refused::PrivateName(private))
        );
        assert_eq!(check_addresses([public, private], true), Ok(()));
        assert_eq!(check_addresses([], true), Err(Refused::Unresolved));
    }

    #[tokio::test]
    async fn userinfo_fragments_long_urls_and_non_urls_are_refused() {
        for (text, refused) in [
            ("https://user:pw@93.184.216.34/", Refused::Userinfo),
            ("https://user@93.184.216.34/", Refused::Userinfo),
            ("https://:pw@93.184.216.34/", Refused::Userinfo),
            ("https://93.184.216.34/#frag", Refused::Fragment),
            ("https://93.184.216.34/#", Refused::Fragment),
        ] {
            assert_eq!(production(text).await, Err(refused), "{text}");
        }
        let long = format!("https://93.184.216.34/{}", "a".repeat(MAX_LEN));
        assert_eq!(production(&long).await, Err(Refused::TooLong));
        let fits = format!("https://93.184.216.34/{}", "a".repeat(MAX_LEN - 22));
        assert_eq!(fits.len(), MAX_LEN);
        assert!(production(&fits).await.is_ok());
        // Percent-encoding makes it longer than given: judged as parsed.
        let grows = format!("https://93.184.216.34/{}x", " ".repeat(1000));
        assert!(grows.len() < MAX_LEN);
        assert_eq!(production(&grows).await, Err(Refused::TooLong));
        for text in [
            "",
            "not a url",
            "https://",
            "https://[::1/",
            "//93.184.216.34/",
        ] {
            assert!(
                matches!(production(text).await, Err(Refused::Malformed(_))),
                "{text}: {:?}",
                production(text).await
            );
        }
    }

    #[tokio::test]
    async fn allowing_private_addresses_takes_http_and_loopback() {
        for text in [
            "http://127.0.0.1:8080/hook",
            "http://0x7f.1/",
            "https://[::1]/",
            "http://169.254.169.254/",
            "http://localhost:9/",
        ] {
            assert!(check(text, true).await.is_ok(), "{text}");
        }
        assert_eq!(
            check("http://0x7f.1/", true).await.unwrap().as_str(),
            "http://127.0.0.1/"
        );
        // The other rules still hold.
        assert_eq!(
            check("http://u@127.0.0.1/", true).await,
            Err(Refused::Userinfo)
        );
        assert_eq!(
            check("http://nowhere.invalid/", true).await,
            Err(Refused::Unresolved)
        );
        let (_, addresses) = resolve("http://127.0.0.1:8080/", true).await.unwrap();
        assert_eq!(addresses, vec!["127.0.0.1:8080".parse().unwrap()]);
    }
}
