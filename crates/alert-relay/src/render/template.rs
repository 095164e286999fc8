//! User templates (`template: {title, body}` on a channel), rendered with minijinja. Templates
//! are compiled once at config load so a syntax error is a config error, and render plain
//! text: each channel escapes the result for its provider.

use minijinja::{Environment, UndefinedBehavior};

use super::Message;

#[derive(Debug)]
pub struct UserTemplate {
    env: Environment<'static>,
    has_title: bool,
    has_body: bool,
}

impl UserTemplate {
    pub fn new(title: Option<String>, body: Option<String>) -> Result<Self, String> {
        let mut env = Environment::new();
        // A typo in a label name renders as empty rather than failing every notification.
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let has_title = title.is_some();
        let has_body = body.is_some();
        if let Some(t) = title {
            env.add_template_owned("title", t)
                .map_err(|e| format!("title: {e}"))?;
        }
        if let Some(b) = body {
            env.add_template_owned("body", b)
                .map_err(|e| format!("body: {e}"))?;
        }
        if !has_title && !has_body {
            return Err("set title, body or both".into());
        }
        Ok(Self {
            env,
            has_title,
            has_body,
        })
    }

    /// Applies the templates to `msg` in place; a template that fails at render time keeps
    /// the default text and reports why.
    pub fn apply(&self, msg: &mut Message) -> Result<(), String> {
        let ctx = minijinja::Value::from_serialize(&*msg);
        let mut errors = Vec::new();
        if self.has_title {
            match self.env.get_template("title").and_then(|t| t.render(&ctx)) {
                Ok(s) => msg.title = s.trim().to_owned(),
                Err(e) => errors.push(format!("title: {e}")),
            }
        }
        if self.has_body {
            match self.env.get_template("body").and_then(|t| t.render(&ctx)) {
                Ok(s) => msg.body = Some(s.trim().to_owned()),
                Err(e) => errors.push(format!("body: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}
