//! MaxMind City/ASN lookups with a bounded LRU cache and reload when a
//! database file changes (a corrupt new file keeps the previous one).
use crate::stats::{counter, Counter};
use anyhow::{Context, Result};
use lru::LruCache;
use maxminddb::{geoip2, Reader};
use parking_lot::{Mutex, RwLock};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

static LOOKUP_ERRORS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.gateway.geoip.errors", &[]));
static RELOADS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.gateway.geoip.reloads", &[]));

/// What a lookup found; every field optional because databases vary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeoInfo {
    pub continent_code: Option<String>,
    pub country_iso_code: Option<String>,
    /// ISO 3166-2, e.g. `GB-ENG` (country code + first subdivision code).
    pub region_iso_code: Option<String>,
    pub locality_name: Option<String>,
    pub postal_code: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub as_number: Option<u32>,
    pub as_organization: Option<String>,
}

impl GeoInfo {
    pub fn is_empty(&self) -> bool {
        *self == GeoInfo::default()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(p).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len() })
}

struct Db {
    var: &'static str,
    path: PathBuf,
    stamp: Option<Stamp>,
    reader: Reader<Vec<u8>>,
}

/// Opens and fully verifies a database so corruption is found now, not on some later lookup.
fn open_db(var: &'static str, path: &Path) -> Result<Db> {
    let stamp = stamp(path);
    let reader = Reader::open_readfile(path).with_context(|| format!("{var}: cannot open {}", path.display()))?;
    // Full verification (including the metadata description map) so a
    // damaged file is refused now rather than failing on some later lookup.
    reader.verify().with_context(|| format!("{var}: {} is not a valid MaxMind database", path.display()))?;
    Ok(Db { var, path: path.to_path_buf(), stamp, reader })
}

struct Dbs {
    city: Option<Arc<Db>>,
    asn: Option<Arc<Db>>,
}

pub struct GeoIp {
    dbs: RwLock<Arc<Dbs>>,
    cache: Mutex<LruCache<IpAddr, Option<Arc<GeoInfo>>>>,
}

impl GeoIp {
    /// None when no database is configured. Errors name the variable.
    pub fn open(city: Option<&str>, asn: Option<&str>, cache_size: usize) -> Result<Option<Self>> {
        if city.is_none() && asn.is_none() {
            return Ok(None);
        }
        let city = city.map(|p| open_db("CNFLOW_GATEWAY_GEOIP_CITY_DB", Path::new(p)).map(Arc::new)).transpose()?;
        let asn = asn.map(|p| open_db("CNFLOW_GATEWAY_GEOIP_ASN_DB", Path::new(p)).map(Arc::new)).transpose()?;
        for db in city.iter().chain(asn.iter()) {
            tracing::info!(
                var = db.var,
                path = %db.path.display(),
                database_type = %db.reader.metadata().database_type,
                "GeoIP database loaded"
            );
        }
        let cap = NonZeroUsize::new(cache_size.max(1)).unwrap_or(NonZeroUsize::MIN);
        Ok(Some(Self { dbs: RwLock::new(Arc::new(Dbs { city, asn })), cache: Mutex::new(LruCache::new(cap)) }))
    }

    /// Reopens databases whose file changed. A file that fails to open or
    /// verify is logged and the loaded one kept. Returns whether anything changed.
    pub fn reload_if_changed(&self) -> bool {
        let cur = self.dbs.read().clone();
        let check = |db: &Option<Arc<Db>>| -> Option<Arc<Db>> {
            let db = db.as_ref()?;
            let now = stamp(&db.path);
            if now.is_none() || now == db.stamp {
                return None;
            }
            match open_db(db.var, &db.path) {
                Ok(new) => Some(Arc::new(new)),
                Err(e) => {
                    tracing::error!("GeoIP reload failed, keeping the loaded database: {e:#}");
                    None
                }
            }
        };
        let city = check(&cur.city);
        let asn = check(&cur.asn);
        if city.is_none() && asn.is_none() {
            return false;
        }
        let next = Dbs { city: city.or_else(|| cur.city.clone()), asn: asn.or_else(|| cur.asn.clone()) };
        *self.dbs.write() = Arc::new(next);
        self.cache.lock().clear();
        RELOADS.inc();
        tracing::info!("GeoIP databases reloaded");
        true
    }

    /// Geo and ASN data of a public address (None for private/special ones or no data).
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<GeoInfo>> {
        if !is_public(ip) {
            return None;
        }
        if let Some(hit) = self.cache.lock().get(&ip) {
            return hit.clone();
        }
        let dbs = self.dbs.read().clone();
        let mut info = GeoInfo::default();
        if let Some(db) = &dbs.city {
            match db.reader.lookup(ip).and_then(|r| r.decode::<geoip2::City>()) {
                Ok(Some(c)) => fill_city(&mut info, &c),
                Ok(None) => {}
                Err(e) => {
                    LOOKUP_ERRORS.inc();
                    tracing::debug!(%ip, "GeoIP city lookup failed: {e}");
                }
            }
        }
        if let Some(db) = &dbs.asn {
            match db.reader.lookup(ip).and_then(|r| r.decode::<geoip2::Asn>()) {
                Ok(Some(a)) => {
                    info.as_number = a.autonomous_system_number;
                    info.as_organization = a.autonomous_system_organization.map(str::to_string);
                }
                Ok(None) => {}
                Err(e) => {
                    LOOKUP_ERRORS.inc();
                    tracing::debug!(%ip, "GeoIP ASN lookup failed: {e}");
                }
            }
        }
        let out = (!info.is_empty()).then(|| Arc::new(info));
        self.cache.lock().put(ip, out.clone());
        out
    }
}

fn fill_city(info: &mut GeoInfo, c: &geoip2::City) {
    info.continent_code = c.continent.code.map(str::to_string);
    info.country_iso_code = c.country.iso_code.map(str::to_string);
    if let (Some(country), Some(sub)) = (c.country.iso_code, c.subdivisions.first().and_then(|s| s.iso_code)) {
        info.region_iso_code = Some(format!("{country}-{sub}"));
    }
    info.locality_name = c.city.names.english.map(str::to_string);
    info.postal_code = c.postal.code.map(str::to_string);
    info.lat = c.location.latitude;
    info.lon = c.location.longitude;
}

/// Globally routable unicast: private, loopback, link-local, CGNAT, multicast,
/// documentation and other special-purpose ranges are skipped.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)) // discard-only
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || o[0] >= 240
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18)) // benchmarking 198.18/15
}

/// Parses an address attribute value: plain IPv4/IPv6, `[v6]`, or v6 with a zone.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(s);
    let s = s.split('%').next().unwrap_or(s);
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn public_and_special_ranges() {
        for s in ["81.2.69.142", "8.8.8.8", "2001:218::1", "::ffff:81.2.69.142", "216.160.83.56"] {
            assert!(is_public(s.parse().unwrap()), "{s}");
        }
        for s in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "10.200.0.1",
        ] {
            assert!(!is_public(s.parse().unwrap()), "{s}");
        }
        assert_eq!(parse_ip("[2001:218::1]"), Some("2001:218::1".parse().unwrap()));
        assert_eq!(parse_ip("fe80::1%eth0"), Some("fe80::1".parse().unwrap()));
        assert_eq!(parse_ip("example.com"), None);
    }
}
