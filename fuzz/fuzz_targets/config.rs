//! The configuration file (`precond::config::parse`): arbitrary text.
//!
//! Asserts: no panic; an error has a non-empty message, and its position (1-based line and
//! column, in characters) lies within the text (column at most one past the end of its line);
//! a parsed configuration has at least one route and one listen address, and routes every
//! target to an existing upstream.
//!
//! `config::parse` resolves `host:port` addresses (`ToSocketAddrs`): so that fuzzing sends no DNS
//! query, this binary defines `getaddrinfo` itself (the executable's definition wins over libc's):
//! `localhost` is answered by libc from `/etc/hosts` only, every other name is unknown.
#![no_main]

use std::ffi::{c_char, c_int, CStr};

use libfuzzer_sys::fuzz_target;

/// `getaddrinfo(3)` without the network: see the module documentation.
///
/// # Safety
/// Called by libc's callers with `getaddrinfo`'s contract.
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const libc::addrinfo,
    res: *mut *mut libc::addrinfo,
) -> c_int {
    type Real = unsafe extern "C" fn(
        *const c_char,
        *const c_char,
        *const libc::addrinfo,
        *mut *mut libc::addrinfo,
    ) -> c_int;
    let local = !node.is_null() && CStr::from_ptr(node).to_bytes() == b"localhost";
    if !local {
        return libc::EAI_NONAME;
    }
    let real = libc::dlsym(libc::RTLD_NEXT, c"getaddrinfo".as_ptr());
    if real.is_null() {
        return libc::EAI_NONAME;
    }
    // `hints` asks for numeric service resolution in std; restrict lookups to /etc/hosts by
    // answering only `localhost`, which every system lists there.
    let real: Real = std::mem::transmute(real);
    real(node, service, hints, res)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match precond::config::parse(text) {
        Ok(c) => {
            assert!(!c.routes.is_empty(), "a configuration without routes");
            assert!(!c.server.listen.is_empty(), "no listen address");
            for (host, path) in [
                (None, "/"),
                (Some("api.example.com"), "/v1/x"),
                (Some("EXAMPLE.com:8080"), "/a/b?c"),
            ] {
                if let Some((i, r)) = c.route_for(host, path) {
                    assert!(i < c.routes.len());
                    assert!(
                        r.upstream < c.upstreams.len(),
                        "route to a missing upstream"
                    );
                }
            }
        }
        Err(e) => {
            assert!(!e.message.trim().is_empty(), "empty error message: {e:?}");
            assert!(!e.to_string().is_empty());
            if let Some((line, col)) = e.position {
                let lines: Vec<&str> = text.split('\n').collect();
                assert!(
                    line >= 1 && line <= lines.len(),
                    "line {line} of {}: {e}",
                    lines.len()
                );
                let width = lines[line - 1].chars().count();
                assert!(
                    col >= 1 && col <= width + 1,
                    "column {col} of a {width}-character line: {e}"
                );
            }
        }
    }
});
