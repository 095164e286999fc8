//! The on-call console's pages (`/ui/`): HTML templates compiled into the binary and rendered
//! with minijinja, HTML auto-escaping on (alert text is data, never markup), and the page
//! views built from the model. The stylesheet and script are embedded too: no build chain,
//! nothing fetched from elsewhere. Pure.

mod views;

use std::sync::OnceLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

pub use self::views::*;

/// Every template, by name (the names end in `.html`: auto-escaping is chosen by that).
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("console/base.html")),
    ("message.html", include_str!("console/message.html")),
    ("login.html", include_str!("console/login.html")),
    ("incidents.html", include_str!("console/incidents.html")),
    (
        "incident_rows.html",
        include_str!("console/incident_rows.html"),
    ),
    ("incident.html", include_str!("console/incident.html")),
    (
        "incident_live.html",
        include_str!("console/incident_live.html"),
    ),
    ("oncall.html", include_str!("console/oncall.html")),
    ("deliveries.html", include_str!("console/deliveries.html")),
    ("maintenance.html", include_str!("console/maintenance.html")),
];

/// The embedded static files: (path under `/ui/static/`, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    ),
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // A missing value is a bug in a view, caught by the tests, not an empty string.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        for (name, source) in TEMPLATES {
            // The templates are part of the binary and compiled by the tests: an error here
            // is a build defect, reported on the first page rendered.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!("console template {name}: {e}");
            }
        }
        env
    })
}

/// Renders page `name` with `context`.
pub fn render(name: &str, context: impl Serialize) -> Result<String, minijinja::Error> {
    environment().get_template(name)?.render(context)
}

/// A static file: its content type and body.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, body)| (*t, *body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let env = environment();
        for (name, _) in TEMPLATES {
            env.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn markup_in_data_is_escaped() {
        let page = render(
            "message.html",
            serde_json::json!({"title": "<script>alert(1)</script>", "text": "a & \"b\""}),
        )
        .expect("render");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{page}"
        );
        assert!(page.contains("a &amp; &quot;b&quot;"), "{page}");
    }
}
