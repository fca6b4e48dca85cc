use super::*;

fn refused(text: &str) -> DocumentError {
    parse(text, "in.yaml").expect_err("refused")
}

fn values(text: &str) -> Vec<Value> {
    parse(text, "in.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .1
        .into_iter()
        .map(|d| d.value)
        .collect()
}

#[test]
fn deep_flow_sequences_are_refused_at_the_bracket_past_the_limit() {
    let text = format!("- {}", "[".repeat(100_000));
    let e = refused(&text);
    assert_eq!(e.problem, Problem::TooDeep { limit: MAX_DEPTH }, "{e}");
    // The block entry is one level, so the 128th bracket is one too many.
    assert_eq!((e.line, e.column), (1, 2 + MAX_DEPTH), "{e}");
    assert!(
        e.to_string()
            .starts_with("in.yaml:1:130: not valid YAML: nested deeper than 128"),
        "{e}"
    );
    // After a key, and with the brackets closed: the same.
    let text = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(refused(&text).problem, Problem::TooDeep { .. }));
}

#[test]
fn deep_block_nesting_is_refused_with_its_line() {
    // `- - - - ...` on one line: compact nested sequences.
    let e = refused(&"- ".repeat(100_000));
    assert_eq!(e.problem, Problem::TooDeep { limit: MAX_DEPTH }, "{e}");
    assert_eq!(e.line, 1);
    // A mapping indented one more level per line.
    let text: String = (0..1000)
        .map(|depth| format!("{}k:\n", " ".repeat(depth)))
        .collect();
    let e = refused(&text);
    assert_eq!((e.line, e.column), (MAX_DEPTH + 1, MAX_DEPTH + 1), "{e}");
}

#[test]
fn deep_json_is_refused() {
    let e = parse(&"[".repeat(100_000), "in.json").unwrap_err();
    assert_eq!(e.format, Format::Json);
    assert_eq!(e.problem, Problem::TooDeep { limit: MAX_DEPTH }, "{e}");
    assert_eq!(e.line, 1);
    let e = parse(&"{\"a\":".repeat(100_000), "in.json").unwrap_err();
    assert_eq!(e.problem, Problem::TooDeep { limit: MAX_DEPTH }, "{e}");
}

#[test]
fn nesting_within_the_limit_is_read() {
    let depth = 100;
    let flow = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    assert_eq!(values(&flow).len(), 1);
    let json = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    assert_eq!(values(&json).len(), 1);
    let block: String = (0..depth)
        .map(|d| format!("{}k:\n", " ".repeat(d)))
        .collect();
    assert_eq!(values(&block).len(), 1);
    let compact = format!("{}x\n", "- ".repeat(depth));
    assert_eq!(values(&compact).len(), 1);
}

#[test]
fn brackets_and_dashes_inside_text_are_not_nesting() {
    let many = 400;
    let text = format!(
        "plain: a{dashes}\nquoted: \"{open}\"\nsingle: '{open}'\n# {open}\nliteral: |\n  {open}\n  - - - -\nfolded: >\n  {open}\nafter: {{x: [1]}}\nurl: http://x:8080/{open}\n",
        dashes = " - b".repeat(many),
        open = "[{".repeat(many),
    );
    let v = values(&text);
    assert_eq!(v[0]["after"]["x"][0], 1);
    assert!(v[0]["literal"].as_str().unwrap().starts_with("[{[{"));
}

/// The classic: each line repeats the one before nine times.
fn billion_laughs_flow() -> String {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let aliases = vec![format!("*{}", pair[0]); 9].join(",");
        text.push_str(&format!("{}: &{} [{aliases}]\n", pair[1], pair[1]));
    }
    text
}

#[test]
fn billion_laughs_is_refused_at_an_alias() {
    let text = billion_laughs_flow();
    let e = refused(&text);
    let Problem::AliasExpansion { alias, .. } = &e.problem else {
        panic!("{e}")
    };
    // a=10 nodes, b=91, c=820, d=7381, e=66430: the aliases of `f` cross the budget.
    assert_eq!(alias, "e", "{e}");
    assert_eq!(e.line, 6, "{e}");
    let line = text.lines().nth(e.line - 1).unwrap();
    assert_eq!(line.chars().nth(e.column - 1), Some('*'), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("in.yaml:6:{}: ", e.column)),
        "{e}"
    );
}

#[test]
fn billion_laughs_in_block_style_is_refused() {
    let mut text = String::from("a: &a\n");
    text.push_str(&"  - lol\n".repeat(9));
    for pair in ["a", "b", "c", "d", "e", "f", "g", "h"].windows(2) {
        text.push_str(&format!("{}: &{}\n", pair[1], pair[1]));
        text.push_str(&format!("  - *{}\n", pair[0]).repeat(9));
    }
    let e = refused(&text);
    assert!(matches!(e.problem, Problem::AliasExpansion { .. }), "{e}");
    let line = text.lines().nth(e.line - 1).unwrap();
    assert_eq!(line.chars().nth(e.column - 1), Some('*'), "{e}");
}

#[test]
fn aliases_that_repeat_a_block_a_few_times_are_read() {
    let text =
        "defaults: &d\n  image: i\n  ports: [1, 2]\none: *d\ntwo: *d\nlist:\n- &x {a: 1}\n- *x\n";
    let v = values(text);
    assert_eq!(v[0]["two"]["ports"][1], 2);
    assert_eq!(v[0]["list"][1]["a"], 1);
}

#[test]
fn a_byte_order_mark_is_not_text() {
    let v = values("\u{feff}kind: Pod\n");
    assert_eq!(v[0]["kind"], "Pod");
    let (format, docs) = parse("\u{feff}{\"kind\":\"Pod\"}", "in.json").unwrap();
    assert_eq!(format, Format::Json);
    assert_eq!(docs[0].value["kind"], "Pod");
}

#[test]
fn documents_are_numbered_and_empty_ones_skipped() {
    let (format, docs) = parse("---\na: 1\n---\n# nothing\n---\nb: 2\n", "in.yaml").unwrap();
    assert_eq!(format, Format::Yaml);
    let numbers: Vec<usize> = docs.iter().map(|d| d.number).collect();
    assert_eq!(numbers, [1, 3]);
    let (_, docs) = parse("{\"a\":1}\n{\"b\":2}", "in.json").unwrap();
    assert_eq!(docs.len(), 2);
}

#[test]
fn syntax_errors_name_line_and_column() {
    let e = refused("a: 1\nb: [x\n");
    assert!(matches!(e.problem, Problem::Syntax(_)), "{e}");
    assert!(e.line >= 2, "{e}");
    let e = parse("{\"a\": 1,\n \"b\": }", "in.json").unwrap_err();
    assert_eq!((e.line, e.column), (2, 7), "{e}");
    assert!(
        e.to_string().starts_with("in.json:2:7: not valid JSON: "),
        "{e}"
    );
}

#[test]
fn anchors_are_per_document() {
    // `*a` in the second document names no anchor there: the parser's error, with a position.
    let e = refused("a: &a [1]\n---\nb: *a\n");
    assert_eq!(e.line, 3, "{e}");
}
