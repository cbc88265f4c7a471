//! Settings of the listening socket and its client connections.

use std::{
    ffi::OsStr,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use super::{ConfigError, Parsed, ServeSettings, parse};
use crate::connection::{ConnectionLimits, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT};

/// Default `PORT`.
pub const DEFAULT_PORT: u16 = 8080;
/// Default `NIXERY_HOST` (all IPv4 interfaces).
pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

crate::settings! {
    /// TCP port to listen on; 0 picks a free port.
    PORT: u16 = {
        env: "PORT", flag: "port", value_name: "PORT",
        default: DEFAULT_PORT, parse: port,
    };
    /// Address to bind [default: 0.0.0.0].
    HOST: IpAddr = {
        env: "NIXERY_HOST", flag: "host", value_name: "ADDR",
        default: DEFAULT_HOST, parse: ip_address,
    };
    /// Seconds a client may take to send a request's headers [default: 30].
    HEADER_TIMEOUT: Duration = {
        env: "NIXERY_HEADER_TIMEOUT", flag: "header-timeout", value_name: "SECONDS",
        default: DEFAULT_HEADER_TIMEOUT, parse: parse::seconds,
    };
    /// Seconds an idle keep-alive connection is kept open [default: 60].
    IDLE_TIMEOUT: Duration = {
        env: "NIXERY_IDLE_TIMEOUT", flag: "idle-timeout", value_name: "SECONDS",
        default: DEFAULT_IDLE_TIMEOUT, parse: parse::seconds,
    };
}

fn port(raw: &OsStr) -> Parsed<u16> {
    parse::trimmed(raw, "expected a port number from 0 to 65535", |v| {
        v.parse().ok()
    })
}

fn ip_address(raw: &OsStr) -> Parsed<IpAddr> {
    parse::trimmed(raw, "expected an IP address such as 0.0.0.0 or ::1", |v| {
        v.parse().ok()
    })
}

/// The address to bind (`NIXERY_HOST`:`PORT`).
pub fn listen(settings: &ServeSettings) -> Result<SocketAddr, ConfigError> {
    let port = settings.get(&PORT)?;
    Ok(SocketAddr::new(settings.get(&HOST)?, port))
}

/// The header and idle cut-offs of client connections.
pub fn limits(settings: &ServeSettings) -> Result<ConnectionLimits, ConfigError> {
    Ok(ConnectionLimits {
        header_timeout: settings.get(&HEADER_TIMEOUT)?,
        idle_timeout: settings.get(&IDLE_TIMEOUT)?,
    })
}
