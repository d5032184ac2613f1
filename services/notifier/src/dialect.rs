//! What SIP plug-and-play phones of each vendor do with the URL they are notified of
//! (`application/url` bodies): some fetch it as their file, others treat it as their
//! provisioning folder and append their own file names to it.
//!
//! Built in, from the vendors' own descriptions of their plug-and-play as the project's
//! issue 10 collects them: Yealink (`<mac>.cfg`, `y000000000000.boot`) and Grandstream
//! (`cfg<mac>.xml`) append names, Snom fetches the URL as it is. `[[notifier.dialects]]`
//! entries add vendors or override these; a vendor named in neither gets the file form.
//!
//! The same table names the Event a vendor's phones take as "fetch your configuration
//! again" in an out-of-dialog NOTIFY (check-sync): `check-sync` for most, `resync` for Cisco
//! SPA/Sipura, `sys-control` for older Grandstream firmware (configurable per vendor).

use serde::{Deserialize, Serialize};

/// How a vendor's phones use a notified URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UrlForm {
    /// The URL is the document: the first document of the composed set.
    File,
    /// The URL is a folder: the device's provisioning folder, every document of its
    /// composed set under its name.
    Folder,
}

/// One `[[notifier.dialects]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialectConfig {
    /// The Event header's `vendor` parameter it applies to (case-insensitive).
    pub vendor: String,
    pub url_form: UrlForm,
    /// The Event of the out-of-dialog NOTIFY that makes these phones re-fetch
    /// (`check-sync`, `resync`, `sys-control`); unset: the built-in one, else `check-sync`.
    #[serde(default)]
    pub resync_event: Option<String>,
}

/// The resync Event every vendor without an entry gets.
pub const DEFAULT_RESYNC_EVENT: &str = "check-sync";

const BUILT_IN_RESYNC: &[(&str, &str)] = &[("cisco", "resync"), ("sipura", "resync")];

/// The Event of the check-sync NOTIFY for `vendor` (always with `reboot=false`: a change
/// that wants a reboot is the operator's to ask for, never this server's default).
pub fn resync_event<'a>(configured: &'a [DialectConfig], vendor: Option<&str>) -> &'a str {
    let Some(vendor) = vendor else {
        return DEFAULT_RESYNC_EVENT;
    };
    configured
        .iter()
        .find(|d| d.vendor.eq_ignore_ascii_case(vendor))
        .and_then(|d| d.resync_event.as_deref())
        .or_else(|| {
            BUILT_IN_RESYNC
                .iter()
                .find(|(v, _)| v.eq_ignore_ascii_case(vendor))
                .map(|(_, e)| *e)
        })
        .unwrap_or(DEFAULT_RESYNC_EVENT)
}

const BUILT_IN: &[(&str, UrlForm)] = &[
    ("yealink", UrlForm::Folder),
    ("grandstream", UrlForm::Folder),
    ("snom", UrlForm::File),
];

/// The URL form for `vendor`: the configured entry, else the built-in one, else a file.
pub fn url_form(configured: &[DialectConfig], vendor: Option<&str>) -> UrlForm {
    let Some(vendor) = vendor else {
        return UrlForm::File;
    };
    configured
        .iter()
        .find(|d| d.vendor.eq_ignore_ascii_case(vendor))
        .map(|d| d.url_form)
        .or_else(|| {
            BUILT_IN
                .iter()
                .find(|(v, _)| v.eq_ignore_ascii_case(vendor))
                .map(|(_, f)| *f)
        })
        .unwrap_or(UrlForm::File)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_entries_win_over_the_built_in_ones() {
        assert_eq!(url_form(&[], Some("Yealink")), UrlForm::Folder);
        assert_eq!(url_form(&[], Some("snom")), UrlForm::File);
        assert_eq!(url_form(&[], Some("unknown")), UrlForm::File);
        assert_eq!(url_form(&[], None), UrlForm::File);
        let cfg = [
            DialectConfig {
                vendor: "YEALINK".into(),
                url_form: UrlForm::File,
                resync_event: None,
            },
            DialectConfig {
                vendor: "fanvil".into(),
                url_form: UrlForm::Folder,
                resync_event: Some("sys-control".into()),
            },
        ];
        assert_eq!(url_form(&cfg, Some("yealink")), UrlForm::File);
        assert_eq!(url_form(&cfg, Some("Fanvil")), UrlForm::Folder);
        assert_eq!(url_form(&cfg, Some("grandstream")), UrlForm::Folder);
    }

    #[test]
    fn the_resync_event_follows_the_vendor() {
        assert_eq!(resync_event(&[], None), "check-sync");
        assert_eq!(resync_event(&[], Some("Yealink")), "check-sync");
        assert_eq!(resync_event(&[], Some("Cisco")), "resync");
        let cfg = [DialectConfig {
            vendor: "grandstream".into(),
            url_form: UrlForm::Folder,
            resync_event: Some("sys-control".into()),
        }];
        assert_eq!(resync_event(&cfg, Some("Grandstream")), "sys-control");
        assert_eq!(resync_event(&cfg, Some("cisco")), "resync");
    }
}
