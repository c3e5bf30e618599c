//! Tables rendered as plain text, Markdown or LaTeX (booktabs).

/// How tables are printed.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Style {
    Text,
    Markdown,
    Latex,
}

/// A table to render as text, Markdown or LaTeX.
pub(super) struct Tab {
    pub caption: String,
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn latex_escape(s: &str) -> String {
    s.replace('\\', "\\textbackslash{}")
        .replace('_', "\\_")
        .replace('%', "\\%")
        .replace('&', "\\&")
        .replace('#', "\\#")
}

pub(super) fn render(t: &Tab, style: Style) -> String {
    let mut out = String::new();
    match style {
        Style::Text => {
            let cols = t.head.len();
            let width: Vec<usize> = (0..cols)
                .map(|c| {
                    t.rows
                        .iter()
                        .map(|r| r.get(c).map_or(0, |x| x.chars().count()))
                        .chain([t.head[c].chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |r: &[String]| -> String {
                r.iter()
                    .enumerate()
                    .map(|(c, x)| {
                        if c == 0 {
                            format!("{x:<w$}", w = width[c])
                        } else {
                            format!("{x:>w$}", w = width[c])
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            out.push_str(&t.caption);
            out.push('\n');
            out.push_str(&line(&t.head));
            out.push('\n');
            for r in &t.rows {
                out.push_str(&line(r));
                out.push('\n');
            }
        }
        Style::Markdown => {
            out.push_str(&format!("**{}**\n\n", t.caption));
            out.push_str(&format!("| {} |\n", t.head.join(" | ")));
            let align: Vec<&str> = (0..t.head.len())
                .map(|c| if c == 0 { "---" } else { "---:" })
                .collect();
            out.push_str(&format!("|{}|\n", align.join("|")));
            for r in &t.rows {
                out.push_str(&format!("| {} |\n", r.join(" | ")));
            }
        }
        Style::Latex => {
            let spec: String = (0..t.head.len())
                .map(|c| if c == 0 { 'l' } else { 'r' })
                .collect();
            out.push_str("\\begin{table}[t]\n\\centering\n\\small\n");
            out.push_str(&format!("\\caption{{{}}}\n", latex_escape(&t.caption)));
            out.push_str(&format!("\\begin{{tabular}}{{{spec}}}\n\\toprule\n"));
            let row = |r: &[String]| -> String {
                r.iter()
                    .map(|x| latex_escape(x))
                    .collect::<Vec<_>>()
                    .join(" & ")
            };
            out.push_str(&format!("{} \\\\\n\\midrule\n", row(&t.head)));
            for r in &t.rows {
                out.push_str(&format!("{} \\\\\n", row(r)));
            }
            out.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n");
        }
    }
    out
}
