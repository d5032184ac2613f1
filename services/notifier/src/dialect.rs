//! What SIP plug-and-play phones of each vendor do with the URL they are notified of
//! (`application/url` bodies): some fetch it as their file, others treat it as their
//! provisioning folder and append their own file names to it.
//!
//! Built in, from the vendors' own descriptions of their plug-and-play as the project's
//! issue 10 collects them: Yealink (`<mac>.cfg`, `y000000000000.boot`) and Grandstream
//! (`cfg<mac>.xml`) append names, Snom fetches the URL as it is. `[[notifier.dialects]]`
//! entries add vendors or override these; a vendor named in neither gets the file form.

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
            },
            DialectConfig {
                vendor: "fanvil".into(),
                url_form: UrlForm::Folder,
            },
        ];
        assert_eq!(url_form(&cfg, Some("yealink")), UrlForm::File);
        assert_eq!(url_form(&cfg, Some("Fanvil")), UrlForm::Folder);
        assert_eq!(url_form(&cfg, Some("grandstream")), UrlForm::Folder);
    }
}
