//! Where a provider's chat completions live and how it is told who is calling.

use crate::config::{LlmOptions, LlmProvider};

/// A provider's endpoint and credential header, resolved from the options.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    /// (name, value) of the header that carries the key.
    pub auth: (String, String),
}

impl Endpoint {
    /// - OpenRouter, OpenAI (and any OpenAI-compatible server):
    ///   `POST {base_url}/chat/completions` with `Authorization: Bearer KEY`.
    /// - Azure OpenAI: `POST {endpoint}/openai/deployments/{deployment_name}/chat/completions
    ///   ?api-version={api_version}` with `api-key: KEY`.
    pub fn of(o: &LlmOptions) -> Endpoint {
        let base = o.base_url.trim_end_matches('/');
        match o.provider {
            LlmProvider::OpenRouter | LlmProvider::OpenAi => Endpoint {
                url: format!("{base}/chat/completions"),
                auth: ("Authorization".into(), format!("Bearer {}", o.api_key)),
            },
            LlmProvider::Azure => Endpoint {
                url: format!(
                    "{base}/openai/deployments/{}/chat/completions?api-version={}",
                    o.deployment_name.as_deref().unwrap_or_default(),
                    o.api_version.as_deref().unwrap_or("2024-10-21"),
                ),
                auth: ("api-key".into(), o.api_key.clone()),
            },
        }
    }
}
