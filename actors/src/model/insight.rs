//! Insights: what a tenant's model reads out of one conversation (summary,
//! language, intent, sentiment, resolution, lead quality, topics, next
//! step). The tenant's settings for them, the JSON Schema the model answers
//! to, the validation of its answer against that schema, and the stored
//! record. Plain data: the analyst actor asks the model and stores.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ids::{SessionId, TenantId};

/// Lead qualities the schema allows.
pub const LEAD_QUALITIES: [&str; 4] = ["none", "cold", "warm", "hot"];
/// Bounds of the answer's text fields, in characters.
const MAX_SUMMARY: usize = 2000;
const MAX_TOPICS: usize = 10;
const MAX_TOPIC: usize = 60;
const MAX_FOLLOW_UP: usize = 1000;
const MAX_LANGUAGE: usize = 35;

/// A tenant's insights: when to analyse, and the intents to choose from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InsightSettings {
    /// Analyse a conversation once it has been quiet this long (seconds) and
    /// has messages not yet analysed. `0`: only on demand.
    pub quiet_after_secs: u64,
    /// The intents the model must choose from (the last is the catch-all).
    pub intents: Vec<String>,
    /// The model that analyses, through the tenant's `openai` block (its
    /// base URL and key). Empty: the `openai` block's own model, and only
    /// when the tenant's agent is `openai`.
    pub model: String,
}

impl Default for InsightSettings {
    fn default() -> Self {
        InsightSettings {
            quiet_after_secs: 600,
            intents: ["question", "purchase", "support", "complaint", "other"]
                .map(String::from)
                .to_vec(),
            model: String::new(),
        }
    }
}

impl InsightSettings {
    /// What is wrong with these settings, naming the field.
    pub fn invalid(&self) -> Option<String> {
        let bad_intent = |intent: &String| {
            intent.is_empty()
                || intent.len() > 40
                || !intent
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if self.intents.is_empty() || self.intents.len() > 30 {
            return Some("`insights.intents` must list 1 to 30 intents".into());
        }
        if let Some(intent) = self.intents.iter().find(|intent| bad_intent(intent)) {
            return Some(format!(
                "`insights.intents`: `{intent}` must be 1 to 40 of a-z, 0-9, `_`"
            ));
        }
        None
    }
}

/// The JSON Schema of the model's answer (strict: every field required, no others).
pub fn answer_schema(intents: &[String]) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": FIELDS,
        "properties": {
            "summary": {"type": "string", "maxLength": MAX_SUMMARY,
                        "description": "Two or three sentences: what the customer wanted and what happened."},
            "language": {"type": "string", "maxLength": MAX_LANGUAGE,
                         "description": "The customer's language as a BCP 47 tag (es, en-GB)."},
            "intent": {"type": "string", "enum": intents},
            "sentiment": {"type": "number", "minimum": -1, "maximum": 1,
                          "description": "The customer's mood: -1 angry, 0 neutral, 1 delighted."},
            "resolved": {"type": "boolean", "description": "Whether the customer got what they came for."},
            "lead_quality": {"type": "string", "enum": LEAD_QUALITIES},
            "topics": {"type": "array", "maxItems": MAX_TOPICS,
                       "items": {"type": "string", "maxLength": MAX_TOPIC}},
            "follow_up": {"type": ["string", "null"], "maxLength": MAX_FOLLOW_UP,
                          "description": "What a person should do next, or null."},
        },
    })
}

/// The fields of an answer, as `answer_schema` requires them.
const FIELDS: [&str; 8] = [
    "summary",
    "language",
    "intent",
    "sentiment",
    "resolved",
    "lead_quality",
    "topics",
    "follow_up",
];

/// The model's answer, once it has passed every rule of `answer_schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsightAnswer {
    pub summary: String,
    pub language: String,
    pub intent: String,
    pub sentiment: f64,
    pub resolved: bool,
    pub lead_quality: String,
    pub topics: Vec<String>,
    pub follow_up: Option<String>,
}

/// Checks the model's text against `answer_schema(intents)`: the shape
/// (every field, no other, each of its type), then each bound. A model in
/// plain JSON mode may wrap the object in a code fence or words: the
/// outermost `{…}` is taken.
pub fn validate_answer(text: &str, intents: &[String]) -> Result<InsightAnswer, String> {
    let json = match (text.find('{'), text.rfind('}')) {
        (Some(start), Some(end)) if start < end => &text[start..=end],
        _ => return Err("the model's answer holds no JSON object".into()),
    };
    let value: Value = serde_json::from_str(json)
        .map_err(|error| format!("the model's answer is not JSON: {error}"))?;
    if let Some(extra) = value
        .as_object()
        .and_then(|object| object.keys().find(|key| !FIELDS.contains(&key.as_str())))
    {
        return Err(format!("the model's answer has an unknown field `{extra}`"));
    }
    let answer: InsightAnswer = serde_json::from_value(value)
        .map_err(|error| format!("the model's answer does not fit the schema: {error}"))?;
    let too_long = |field: &str, value: &str, max: usize| {
        (value.chars().count() > max).then(|| format!("`{field}` is over {max} characters"))
    };
    let problem = too_long("summary", &answer.summary, MAX_SUMMARY)
        .or_else(|| too_long("language", &answer.language, MAX_LANGUAGE))
        .or_else(|| {
            answer
                .follow_up
                .as_deref()
                .and_then(|text| too_long("follow_up", text, MAX_FOLLOW_UP))
        })
        .or_else(|| {
            (!intents.contains(&answer.intent))
                .then(|| format!("`intent` `{}` is not one of {intents:?}", answer.intent))
        })
        .or_else(|| {
            (!(-1.0..=1.0).contains(&answer.sentiment))
                .then(|| format!("`sentiment` {} is outside -1..1", answer.sentiment))
        })
        .or_else(|| {
            (!LEAD_QUALITIES.contains(&answer.lead_quality.as_str())).then(|| {
                format!(
                    "`lead_quality` `{}` is not one of {LEAD_QUALITIES:?}",
                    answer.lead_quality
                )
            })
        })
        .or_else(|| {
            (answer.topics.len() > MAX_TOPICS).then(|| format!("over {MAX_TOPICS} `topics`"))
        })
        .or_else(|| {
            answer
                .topics
                .iter()
                .find_map(|topic| too_long("topics[]", topic, MAX_TOPIC))
        })
        .or_else(|| {
            answer
                .summary
                .trim()
                .is_empty()
                .then(|| "`summary` is empty".into())
        });
    match problem {
        Some(problem) => Err(format!("the model's answer breaks the schema: {problem}")),
        None => Ok(answer),
    }
}

/// One conversation's insights, as stored (one record per conversation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    pub tenant: TenantId,
    pub conversation_id: SessionId,
    #[serde(flatten)]
    pub answer: InsightAnswer,
    /// The model that analysed, and what it cost.
    pub model: String,
    #[serde(default)]
    pub prompt_tokens: Option<u32>,
    #[serde(default)]
    pub completion_tokens: Option<u32>,
    /// The newest message analysed: new messages after it make it stale.
    pub through_seq: u64,
    pub analyzed_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intents() -> Vec<String> {
        InsightSettings::default().intents
    }

    const GOOD: &str = r#"{"summary": "Wants a quote for a new boiler.", "language": "es",
        "intent": "purchase", "sentiment": 0.4, "resolved": false, "lead_quality": "warm",
        "topics": ["boiler", "quote"], "follow_up": "Call back with a price."}"#;

    #[test]
    fn an_answer_that_fits_the_schema_is_taken_even_in_a_code_fence() {
        let answer = validate_answer(GOOD, &intents()).unwrap();
        assert_eq!(answer.intent, "purchase");
        let fenced = format!("```json\n{GOOD}\n```");
        assert_eq!(validate_answer(&fenced, &intents()).unwrap(), answer);
    }

    #[test]
    fn answers_that_break_the_schema_are_refused_saying_why() {
        let cases = [
            ("not json at all", "no JSON object"),
            (r#"{"summary": "x"}"#, "missing field"),
            (&GOOD.replace("purchase", "gossip"), "`intent`"),
            (&GOOD.replace("0.4", "1.5"), "`sentiment`"),
            (&GOOD.replace("warm", "lukewarm"), "`lead_quality`"),
            (&GOOD.replace("false", "\"no\""), "invalid type"),
            (
                &GOOD.replace("\"language\"", "\"extra\": 1, \"language\""),
                "unknown field",
            ),
            (
                &GOOD.replace("Wants a quote for a new boiler.", " "),
                "`summary` is empty",
            ),
        ];
        for (text, why) in cases {
            let error = validate_answer(text, &intents()).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        let long_topics = GOOD.replace(
            r#"["boiler", "quote"]"#,
            &serde_json::to_string(&vec!["t"; 11]).unwrap(),
        );
        assert!(
            validate_answer(&long_topics, &intents())
                .unwrap_err()
                .contains("topics")
        );
    }

    #[test]
    fn the_schema_names_the_tenants_intents_and_requires_every_field() {
        let schema = answer_schema(&intents());
        assert_eq!(schema["properties"]["intent"]["enum"][0], "question");
        assert_eq!(schema["required"].as_array().unwrap().len(), 8);
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn intents_are_checked() {
        let mut settings = InsightSettings::default();
        assert!(settings.invalid().is_none());
        settings.intents = vec!["Bad Intent".into()];
        assert!(settings.invalid().unwrap().contains("insights.intents"));
        settings.intents.clear();
        assert!(settings.invalid().is_some());
    }
}
