use crate::*;

/// Every error of `src`, each as [`Diagnostic::render`] shows it.
fn rendered(src: &str) -> Vec<String> {
    match parse("gantry.toml", src) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid { errors, .. }) => errors.iter().map(|d| d.render()).collect(),
        Err(e) => panic!("{e}"),
    }
}

/// The one rendered error whose text contains `needle`.
fn rendered_with(src: &str, needle: &str) -> String {
    let all = rendered(src);
    let mut hits = all.iter().filter(|r| r.contains(needle));
    let hit = hits
        .next()
        .unwrap_or_else(|| panic!("no {needle:?} in {all:#?}"));
    assert!(hits.next().is_none(), "{needle:?} twice in {all:#?}");
    hit.clone()
}

/// A diagnostic on `line` (line 7 of `gantry.toml`), for the layout cases the
/// TOML parser never produces itself (long lines, wide characters).
fn on_line(line: &str, column: usize, span_chars: usize) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        file: "gantry.toml".into(),
        line: 7,
        column,
        path: "service.env.X".into(),
        message: "looks like a secret".into(),
        source_line: line.into(),
        span_chars,
    }
}

const SERVICE: &str = "[service]\nname = \"s\"\ncommand = \"c\"\n";

#[test]
fn a_span_at_the_start_of_a_line_is_underlined_from_the_gutter() {
    let src = SERVICE.to_owned() + "comand = \"c\"\n";
    assert_eq!(
        rendered_with(&src, "service.comand"),
        "error: service.comand: unknown key \"comand\"; did you mean \"command\"? \
         (expected one of: args, command, env, name, port_env, run_as, sandbox, secrets)\n \
         --> gantry.toml:4:1\n  \
         |\n\
         4 | comand = \"c\"\n  \
         | ^^^^^^"
    );
}

#[test]
fn a_one_character_value_in_the_middle_of_a_line_gets_one_caret_under_it() {
    let src = "\n".repeat(8) + "[health]\nfailure_threshold = 0\n";
    assert_eq!(
        rendered_with(&src, "failure_threshold"),
        "error: health.failure_threshold: expected an integer from 1 to 100\n  \
         --> gantry.toml:10:21\n   \
         |\n\
         10 | failure_threshold = 0\n   \
         |                     ^"
    );
}

#[test]
fn a_multi_character_span_is_underlined_across_its_width() {
    let src = SERVICE.to_owned()
        + "[environments.production]\nlisten = \"127.0.0.1:1\"\nstrategy = \"linear\"\n";
    let r = rendered_with(&src, "unknown strategy");
    assert!(
        r.ends_with("6 | strategy = \"linear\"\n  |            ^^^^^^^^"),
        "{r}"
    );
}

#[test]
fn tabs_become_spaces_and_the_caret_still_lines_up() {
    let src = SERVICE.to_owned()
        + "[environments.production]\nlisten = \"127.0.0.1:1\"\n\tinstances =\t\"two\"\n";
    let r = rendered_with(&src, "instances");
    assert!(r.contains("--> gantry.toml:6:14"), "{r}");
    assert!(!r.contains('\t'), "{r}");
    assert!(
        r.ends_with("6 |     instances =    \"two\"\n  |                    ^^^^^"),
        "{r}"
    );
}

#[test]
fn control_characters_in_the_source_line_are_escaped_and_the_caret_follows() {
    // ESC in a string is not valid TOML: the parser points at it.
    let src = "[service]\nname = \"a\u{1b}]0;pwned\u{7}b\"\n";
    let r = rendered_with(src, "not valid TOML");
    assert!(!r.chars().any(|c| c.is_control() && c != '\n'), "{r:?}");
    assert!(
        r.ends_with("2 | name = \"a\\x1b]0;pwned\\x07b\"\n  |          ^^^^"),
        "{r}"
    );

    // A control character before the span widens the line; the caret moves with it.
    let d = on_line("A\r = \"x\"", 6, 3);
    assert!(
        d.render().ends_with("7 | A\\x0d = \"x\"\n  |         ^^^"),
        "{}",
        d.render()
    );
}

#[test]
fn bidirectional_overrides_are_escaped() {
    let d = on_line("X = \"\u{202e}terces\"", 5, 9);
    let r = d.render();
    assert!(!r.contains('\u{202e}'), "{r:?}");
    assert!(
        r.ends_with("7 | X = \"\\u{202e}terces\"\n  |     ^^^^^^^^^^^^^^^^"),
        "{r}"
    );
}

#[test]
fn the_last_line_without_a_newline_is_shown_whole() {
    let src = SERVICE.to_owned()
        + "[environments.production]\nlisten = \"127.0.0.1:1\"\nstrategy = \"linear\"";
    let r = rendered_with(&src, "unknown strategy");
    assert!(
        r.ends_with("6 | strategy = \"linear\"\n  |            ^^^^^^^^"),
        "{r}"
    );
    // A syntax error at the very end of the file points just past the text.
    let r = rendered_with("[service]\nname = \"x\nfoo", "not valid TOML");
    assert!(r.contains("--> gantry.toml:3:4"), "{r}");
    assert!(r.ends_with("3 | foo\n  |    ^"), "{r}");
}

#[test]
fn crlf_line_endings_are_not_echoed() {
    let r = rendered_with("[service]\r\nname = 3\r\n", "service.name");
    assert!(r.ends_with("2 | name = 3\n  |        ^"), "{r:?}");
}

#[test]
fn a_span_running_onto_later_lines_is_underlined_to_the_end_of_its_first() {
    let src =
        SERVICE.to_owned() + "[health]\npath = \"/\"\n[environments]\nproduction = [\n  1,\n]\n";
    let r = rendered_with(&src, "environments.production");
    assert!(r.ends_with("7 | production = [\n  |              ^"), "{r}");
}

#[test]
fn a_long_line_is_cut_around_the_span() {
    let before = "a".repeat(150);
    let after = "z".repeat(150);
    let line = format!("X = \"{before}\" # {after}");
    // The span is the 150 a's and their quotes, from column 5.
    let r = on_line(&line, 5, 152).render();
    let shown = r.lines().nth(3).unwrap();
    assert!(shown.starts_with("7 | X = \"aaa"), "{shown}");
    assert!(shown.ends_with("aaa..."), "{shown}");
    assert_eq!(shown.len(), "7 | ".len() + 100 + 3, "{shown}");
    let carets = r.lines().nth(4).unwrap();
    assert_eq!(carets, format!("  |     {}", "^".repeat(96)));

    // A span far to the right keeps some context before it, cut on both sides.
    let col = "X = \"".len() + before.len() + "\" # ".len() + 1;
    let r = on_line(&line, col, 150).render();
    let shown = r.lines().nth(3).unwrap();
    let carets = r.lines().nth(4).unwrap();
    assert!(shown.starts_with("7 | ...aaa"), "{shown}");
    assert!(shown.ends_with("zzz..."), "{shown}");
    let caret_at = carets.find('^').unwrap();
    assert_eq!(&shown[caret_at - 4..caret_at], "\" # ", "{shown}\n{carets}");
    assert_eq!(&shown[caret_at..caret_at + 1], "z");
    assert!(shown.len() <= "7 | ".len() + 3 + 100 + 3, "{shown}");
}

#[test]
fn wide_characters_take_two_columns() {
    let d = on_line("名前 = 3", 6, 1);
    assert!(
        d.render().ends_with("7 | 名前 = 3\n  |        ^"),
        "{}",
        d.render()
    );
}

#[test]
fn a_config_error_renders_every_error_and_warning_then_a_count() {
    let src = SERVICE.to_owned()
        + "[service.env]\nAPI_TOKEN = \"hunter2\"\n[health]\npath = \"healthz\"\nfailure_threshold = 0\n[environments.production]\nlisten = \"127.0.0.1:1\"\n";
    let e = parse("gantry.toml", &src).unwrap_err();
    let r = e.render();
    let ConfigError::Invalid {
        errors, warnings, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((errors.len(), warnings.len()), (2, 1), "{r}");
    for d in errors.iter().chain(warnings) {
        assert!(r.contains(&d.render()), "{r}");
    }
    assert!(r.contains("\n\nwarning: service.env.API_TOKEN"), "{r}");
    assert!(
        r.ends_with("\n\ngantry.toml: 2 error(s), 1 warning(s)"),
        "{r}"
    );

    let unreadable = load(std::path::Path::new("/nonexistent/gantry.toml")).unwrap_err();
    assert!(
        unreadable
            .render()
            .starts_with("error: cannot read config file /nonexistent/gantry.toml"),
        "{}",
        unreadable.render()
    );
}

/// The whole form on the file of the one-line snapshot next door.
#[test]
fn every_error_rendered_with_its_source_line() {
    let src = r#"
[service]
name = "hello"
comand = "bin/hello"
args = ["--port", "{prot}"]

[health]
path = "healthz"
interval = "soon"
failure_threshold = 0

[environments.production]
listen = "localhost"
instances = "two"
strategy = "linear"
"#;
    insta::assert_snapshot!(parse("gantry.toml", src).unwrap_err().render());
}
