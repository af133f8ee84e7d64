//! Prompt construction, one builder per task, transcribing lm-evaluation-harness 0.4.
//!
//! A multiple-choice document becomes one request per choice.
//! lm-eval's `construct_requests` makes `(context, target_delimiter + choice)` with `target_delimiter = " "`,
//! and for `multiple_inputs` tasks (WinoGrande) `(choice, target_delimiter + target)`: the context varies
//! and the continuation is fixed.
//! `choices` keeps `doc_to_choice(doc)` itself, whose character lengths normalise `acc_norm`.
//! Builders return `Err(reason)` for a document they cannot use (missing field, empty choice list, gold
//! out of range); the evaluator reports and skips such documents.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::Row;
use crate::text::{lower_first, py_capitalize, py_strip, remove_bracketed};

use super::TaskName;

/// lm-eval's `target_delimiter` for every task here.
pub const TARGET_DELIMITER: &str = " ";

/// lm-eval's `fewshot_delimiter`.
pub const FEWSHOT_DELIMITER: &str = "\n\n";

/// One (context, continuation) request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The text the model conditions on.
    pub context: String,
    /// The text whose log-likelihood is scored.
    pub continuation: String,
}

/// A document's requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// One request per choice (one in all for LAMBADA).
    pub requests: Vec<Request>,
    /// `doc_to_choice(doc)`: what `acc_norm` divides by the length of.
    pub choices: Vec<String>,
    /// Index of the correct request.
    pub gold: usize,
}

type DocResult<T> = std::result::Result<T, String>;

fn field<'a>(row: &'a Row, name: &str) -> DocResult<&'a Value> {
    row.get(name)
        .filter(|v| !v.is_null())
        .ok_or_else(|| format!("field '{name}' missing"))
}

fn string<'a>(row: &'a Row, name: &str) -> DocResult<&'a str> {
    field(row, name)?
        .as_str()
        .ok_or_else(|| format!("field '{name}' is not a string"))
}

fn strings(value: &Value, name: &str) -> DocResult<Vec<String>> {
    value
        .as_array()
        .ok_or_else(|| format!("field '{name}' is not a list"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("field '{name}' holds a non-string"))
        })
        .collect()
}

fn index(row: &Row, name: &str) -> DocResult<usize> {
    let v = field(row, name)?;
    let i = match v {
        Value::Number(n) => n.as_u64(),
        Value::Bool(b) => Some(u64::from(*b)),
        // lm-eval turns digit-string targets into integers (`ast.literal_eval`).
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    i.and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| format!("field '{name}' = {v} is not an index"))
}

/// A multiple-choice prompt with a shared context: requests `(context, " " + choice)`.
fn shared_context(context: String, choices: Vec<String>, gold: usize) -> DocResult<Prompt> {
    check(&choices, gold)?;
    let requests = choices
        .iter()
        .map(|c| Request {
            context: context.clone(),
            continuation: format!("{TARGET_DELIMITER}{c}"),
        })
        .collect();
    Ok(Prompt {
        requests,
        choices,
        gold,
    })
}

fn check(choices: &[String], gold: usize) -> DocResult<()> {
    if choices.is_empty() {
        return Err("empty choice list".into());
    }
    if gold >= choices.len() {
        return Err(format!(
            "gold index {gold} out of range for {} choices",
            choices.len()
        ));
    }
    Ok(())
}

/// Builds the prompt of one document of `task` (not MMLU, which needs its few-shot prefix: see [`mmlu`]).
pub fn build(task: TaskName, row: &Row) -> DocResult<Prompt> {
    match task {
        TaskName::ArcEasy | TaskName::ArcChallenge => arc(row),
        TaskName::Boolq => boolq(row),
        TaskName::Hellaswag => hellaswag(row),
        TaskName::Openbookqa => openbookqa(row),
        TaskName::Piqa => piqa(row),
        TaskName::Winogrande => winogrande(row),
        TaskName::Copa => copa(row),
        TaskName::LambadaOpenai => lambada_openai(row),
        TaskName::Mmlu => Err("MMLU documents need their subject's few-shot prefix".into()),
    }
}

/// `choices.text` and the index of `answer_key` in `choices.label`.
fn labelled_choices(row: &Row, answer_key: &str) -> DocResult<(Vec<String>, usize)> {
    let choices = field(row, "choices")?;
    let text = strings(
        choices.get("text").ok_or("field 'choices.text' missing")?,
        "choices.text",
    )?;
    let labels = strings(
        choices
            .get("label")
            .ok_or("field 'choices.label' missing")?,
        "choices.label",
    )?;
    let gold = labels
        .iter()
        .position(|l| l == answer_key)
        .ok_or_else(|| format!("answerKey {answer_key:?} not among labels {labels:?}"))?;
    Ok((text, gold))
}

/// `arc_easy.yaml` / `arc_challenge.yaml`:
/// `doc_to_text: "Question: {{question}}\nAnswer:"`, `doc_to_target: "{{choices.label.index(answerKey)}}"`,
/// `doc_to_choice: "{{choices.text}}"`.
pub fn arc(row: &Row) -> DocResult<Prompt> {
    let question = string(row, "question")?;
    let (choices, gold) = labelled_choices(row, string(row, "answerKey")?)?;
    shared_context(format!("Question: {question}\nAnswer:"), choices, gold)
}

/// `openbookqa.yaml`: `doc_to_text: question_stem`,
/// `doc_to_target: "{{choices.label.index(answerKey.lstrip())}}"`, `doc_to_choice: "{{choices.text}}"`.
pub fn openbookqa(row: &Row) -> DocResult<Prompt> {
    let stem = string(row, "question_stem")?;
    let key = string(row, "answerKey")?;
    let (choices, gold) = labelled_choices(row, key.trim_start_matches(crate::text::py_is_space))?;
    shared_context(stem.to_string(), choices, gold)
}

/// `super_glue/boolq/default.yaml`: `doc_to_text: "{{passage}}\nQuestion: {{question}}?\nAnswer:"`,
/// `doc_to_choice: ["no", "yes"]`, `doc_to_target: label`.
/// The cache's `boolq` save has `answer: bool` where SuperGLUE has `label: 0|1`; both are read.
pub fn boolq(row: &Row) -> DocResult<Prompt> {
    let passage = string(row, "passage")?;
    let question = string(row, "question")?;
    let gold = if row.contains_key("label") {
        index(row, "label")?
    } else {
        index(row, "answer")?
    };
    shared_context(
        format!("{passage}\nQuestion: {question}?\nAnswer:"),
        vec!["no".into(), "yes".into()],
        gold,
    )
}

/// `hellaswag/utils.py`'s `preprocess`: strip, `" [title]"` → `". "`, drop `[...]` spans, `"  "` → `" "`.
pub fn hellaswag_preprocess(text: &str) -> String {
    let text = py_strip(text).replace(" [title]", ". ");
    remove_bracketed(&text).replace("  ", " ")
}

/// `hellaswag.yaml` with `utils.process_docs`:
/// `ctx = ctx_a + " " + ctx_b.capitalize()`, `query = preprocess(activity_label + ": " + ctx)`,
/// `choices = [preprocess(e) for e in endings]`, `gold = int(label)`.
pub fn hellaswag(row: &Row) -> DocResult<Prompt> {
    let ctx = format!(
        "{} {}",
        string(row, "ctx_a")?,
        py_capitalize(string(row, "ctx_b")?)
    );
    let query = hellaswag_preprocess(&format!("{}: {ctx}", string(row, "activity_label")?));
    let choices = strings(field(row, "endings")?, "endings")?
        .iter()
        .map(|e| hellaswag_preprocess(e))
        .collect();
    shared_context(query, choices, index(row, "label")?)
}

/// `piqa.yaml`: `doc_to_text: "Question: {{goal}}\nAnswer:"`, `doc_to_choice: "{{[sol1, sol2]}}"`,
/// `doc_to_target: label`.
pub fn piqa(row: &Row) -> DocResult<Prompt> {
    let goal = string(row, "goal")?;
    let choices = vec![
        string(row, "sol1")?.to_string(),
        string(row, "sol2")?.to_string(),
    ];
    shared_context(
        format!("Question: {goal}\nAnswer:"),
        choices,
        index(row, "label")?,
    )
}

/// `winogrande/default.yaml` with `preprocess_winogrande.py` (`multiple_inputs`):
/// `doc_to_choice = [sentence[:idx] + opt for opt in (option1, option2)]` with `idx = sentence.index("_")`,
/// `doc_to_target = sentence[idx + 1:].strip()`, gold `{"1": 0, "2": 1}[answer]`.
/// Requests are `(choice, " " + target)`: the continuation after the blank is scored.
pub fn winogrande(row: &Row) -> DocResult<Prompt> {
    let sentence = string(row, "sentence")?;
    let blank = sentence.find('_').ok_or("sentence has no '_' blank")?;
    let target = py_strip(&sentence[blank + 1..]);
    let options = [string(row, "option1")?, string(row, "option2")?];
    let choices: Vec<String> = options
        .iter()
        .map(|o| format!("{}{o}", &sentence[..blank]))
        .collect();
    let gold = match string(row, "answer")? {
        "1" => 0,
        "2" => 1,
        other => return Err(format!("answer {other:?} is not \"1\" or \"2\"")),
    };
    let requests = choices
        .iter()
        .map(|c| Request {
            context: c.clone(),
            continuation: format!("{TARGET_DELIMITER}{target}"),
        })
        .collect();
    Ok(Prompt {
        requests,
        choices,
        gold,
    })
}

/// `super_glue/copa` with `utils.py`:
/// `doc_to_text = premise.strip()[:-1] + " because"` (cause) or `" therefore"` (effect),
/// `doc_to_choice = [" " + convert_choice(choice1), " " + convert_choice(choice2)]` with
/// `convert_choice(c) = c[0].lower() + c[1:]`, `doc_to_target = " " + convert_choice(correct choice)`.
/// With the target delimiter, continuations start with two spaces, as in lm-eval.
pub fn copa(row: &Row) -> DocResult<Prompt> {
    let connector = match string(row, "question")? {
        "cause" => "because",
        "effect" => "therefore",
        other => return Err(format!("question {other:?} is not cause or effect")),
    };
    let premise = py_strip(string(row, "premise")?);
    let mut chars = premise.chars();
    chars.next_back();
    let context = format!("{} {connector}", chars.as_str());
    let raw = [string(row, "choice1")?, string(row, "choice2")?];
    if raw.iter().any(|c| c.is_empty()) {
        return Err("empty choice".into());
    }
    let choices: Vec<String> = raw.iter().map(|c| format!(" {}", lower_first(c))).collect();
    let label = index(row, "label")?;
    let target = choices
        .get(label)
        .ok_or_else(|| format!("label {label} out of range"))?;
    // `choices.index(target)`: the first equal choice.
    let gold = choices.iter().position(|c| c == target).unwrap_or(label);
    shared_context(context, choices, gold)
}

/// `lambada_openai.yaml` (`output_type: loglikelihood`):
/// `doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"`, `doc_to_target: "{{' '+text.split(' ')[-1]}}"`.
pub fn lambada_openai(row: &Row) -> DocResult<Prompt> {
    let text = string(row, "text")?;
    let (context, last) = text.rsplit_once(' ').unwrap_or(("", text));
    let continuation = format!(" {last}");
    Ok(Prompt {
        requests: vec![Request {
            context: context.to_string(),
            continuation,
        }],
        choices: vec![last.to_string()],
        gold: 0,
    })
}

/// MMLU's `doc_to_text`:
/// `"{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"`.
pub fn mmlu_text(row: &Row) -> DocResult<String> {
    let question = py_strip(string(row, "question")?);
    let choices = strings(field(row, "choices")?, "choices")?;
    if choices.len() != 4 {
        return Err(format!("{} choices where MMLU has 4", choices.len()));
    }
    Ok(format!(
        "{question}\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
        choices[0], choices[1], choices[2], choices[3]
    ))
}

/// MMLU's letters, `doc_to_choice: ["A", "B", "C", "D"]`.
const MMLU_LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// The start of every prompt of an MMLU subject: the description
/// `"The following are multiple choice questions (with answers) about {subject}.\n\n"` (underscores read as
/// spaces) and the first `shots` dev documents (`sampler: first_n`), each `doc_to_text + " " + letter`,
/// joined and followed by `"\n\n"`.
pub fn mmlu_fewshot_prefix(subject: &str, dev: &[Row], shots: usize) -> DocResult<String> {
    let mut prefix = format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject.replace('_', " ")
    );
    if dev.len() < shots {
        return Err(format!(
            "{subject}: {} dev documents for {shots} shots",
            dev.len()
        ));
    }
    for row in &dev[..shots] {
        let text = mmlu_text(row).map_err(|e| format!("{subject} dev example: {e}"))?;
        let answer = index(row, "answer").map_err(|e| format!("{subject} dev example: {e}"))?;
        let letter = MMLU_LETTERS
            .get(answer)
            .ok_or_else(|| format!("{subject} dev answer {answer} out of range"))?;
        prefix.push_str(&text);
        prefix.push_str(TARGET_DELIMITER);
        prefix.push_str(letter);
        prefix.push_str(FEWSHOT_DELIMITER);
    }
    Ok(prefix)
}

/// One MMLU test document after its subject's few-shot `prefix`: continuations `" A"` … `" D"`,
/// `doc_to_target: answer`.
pub fn mmlu(prefix: &str, row: &Row) -> DocResult<Prompt> {
    let context = format!("{prefix}{}", mmlu_text(row)?);
    shared_context(
        context,
        MMLU_LETTERS.iter().map(|l| (*l).to_string()).collect(),
        index(row, "answer")?,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Row {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test rows are objects"),
        }
    }

    #[test]
    fn hellaswag_preprocess_matches_utils() {
        assert_eq!(
            hellaswag_preprocess("  Home [title] How to x [step] Do it.  "),
            "Home. How to x Do it."
        );
        assert_eq!(hellaswag_preprocess("a  b"), "a b");
    }

    #[test]
    fn bad_documents_are_reported() {
        assert_eq!(
            piqa(&row(
                json!({"goal": "g", "sol1": "a", "sol2": "b", "label": 2})
            ))
            .unwrap_err(),
            "gold index 2 out of range for 2 choices"
        );
        let arc_empty =
            json!({"question": "q", "choices": {"text": [], "label": []}, "answerKey": "A"});
        assert!(arc(&row(arc_empty)).is_err());
        assert!(boolq(&row(json!({"passage": "p"})))
            .unwrap_err()
            .contains("question"));
        assert!(winogrande(&row(
            json!({"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"})
        ))
        .is_err());
    }

    #[test]
    fn lambada_without_space() {
        let p = lambada_openai(&row(json!({"text": "word"}))).unwrap();
        assert_eq!(
            p.requests[0],
            Request {
                context: String::new(),
                continuation: " word".into()
            }
        );
    }
}
