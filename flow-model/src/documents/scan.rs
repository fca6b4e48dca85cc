//! A linear pre-scan of YAML text that bounds what the parser will be asked to do.
//!
//! libyaml (under serde_yaml) reads a whole document into events before serde sees any of it, and
//! its cost grows with the square of the nesting depth (every token re-checks every open flow
//! level), so its own recursion limit comes too late: 100,000 nested sequences cost 91 s of CPU
//! before failing. Aliases are expanded by the deserializer, where 30 lines of "billion laughs"
//! become a billion nodes. This scan reads the text once, lexically (quotes, comments, block
//! scalars, flow brackets, block indentation, anchors and aliases), and refuses a document that
//! nests deeper than the limit or whose aliases would expand it past its budget, naming the line
//! and column where that happens.
//!
//! It estimates; it does not parse. The depth it counts is at least the real one for well-formed
//! YAML (each block key or `- ` entry at a new column and each open bracket is one level), and an
//! anchor's size is the count of nodes written between the anchor and the end of its node, plus
//! what the aliases inside it expand to. Malformed text it lets through is refused by the parser.

/// Where the scan stopped a document, and why (1-based line and column, in characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub line: usize,
    pub column: usize,
    pub reason: Reason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    TooDeep { limit: usize },
    Expansion { alias: String, limit: u64 },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Sequence,
    Mapping,
}

/// An anchor whose node is still being read.
struct OpenAnchor {
    name: String,
    /// Nodes counted when the anchor was met.
    start: u64,
    end: AnchorEnd,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AnchorEnd {
    /// A flow collection: ends when the bracket depth falls back to this.
    Flow(usize),
    /// A block collection below the line, the value of the key or `- ` entry at this column:
    /// ends at a line indented at most this much, except that a `- ` entry at exactly the column
    /// of a key is still its value (`key: &a` then `- x` at the key's column). `None`: a node at
    /// the top of the document, which ends with it.
    Block(Option<(usize, Level)>),
}

/// What the scan found in the whole text: the first alias (the position the parser's own alias
/// error lacks).
#[derive(Debug, Default)]
pub struct Scanned {
    pub first_alias: Option<(usize, usize)>,
}

/// Scans `text` (YAML, possibly several documents). `max_depth` bounds nesting; aliases may add
/// at most `max_nodes` nodes in all (the nodes written in the text count too).
pub fn scan(text: &str, max_depth: usize, max_nodes: u64) -> Result<Scanned, Refusal> {
    let mut s = Scanner {
        max_depth,
        max_nodes,
        block: Vec::new(),
        flow: 0,
        quote: None,
        block_scalar: None,
        nodes: 0,
        anchors: std::collections::HashMap::new(),
        open: Vec::new(),
        found: Scanned::default(),
    };
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        s.line(line, index + 1)?;
    }
    Ok(s.found)
}

struct Scanner {
    max_depth: usize,
    max_nodes: u64,
    /// Open block collections: the column of their entries and what they are.
    block: Vec<(usize, Level)>,
    /// Open flow collections (`[`, `{`).
    flow: usize,
    /// A quoted scalar that goes on past the end of the line.
    quote: Option<char>,
    /// Inside a literal or folded block scalar: lines indented more than this belong to it
    /// (`None` when not in one; `Some(-1)` for a block scalar at the top level).
    block_scalar: Option<isize>,
    /// Nodes so far: written ones, and what aliases stand for.
    nodes: u64,
    /// Size of each anchored node of the current document, in nodes.
    anchors: std::collections::HashMap<String, u64>,
    open: Vec<OpenAnchor>,
    found: Scanned,
}

fn is_blank(c: Option<&char>) -> bool {
    matches!(c, None | Some(' ' | '\t'))
}

fn is_flow_indicator(c: char) -> bool {
    matches!(c, '[' | ']' | '{' | '}' | ',')
}

impl Scanner {
    fn line(&mut self, line: &str, number: usize) -> Result<(), Refusal> {
        let chars: Vec<char> = line.chars().collect();
        let indent = chars.iter().take_while(|c| **c == ' ').count();
        let rest_blank = chars[indent..].iter().all(|c| *c == ' ' || *c == '\t');
        if let Some(parent) = self.block_scalar {
            if rest_blank || indent as isize > parent {
                return Ok(());
            }
            self.block_scalar = None;
        }
        if self.quote.is_none() {
            if rest_blank || chars.get(indent) == Some(&'#') {
                return Ok(());
            }
            let marker =
                (line.starts_with("---") || line.starts_with("...")) && is_blank(chars.get(3));
            if marker {
                self.end_document();
                if line.starts_with("...") {
                    return Ok(());
                }
                return self.tokens(&chars, 3, number);
            }
            if indent == 0 && chars[0] == '%' {
                return Ok(()); // a directive
            }
            if self.flow == 0 {
                self.dedent(
                    indent,
                    chars.get(indent) == Some(&'-') && is_blank(chars.get(indent + 1)),
                );
            }
        }
        self.tokens(
            &chars,
            if self.quote.is_some() { 0 } else { indent },
            number,
        )
    }

    /// A new document: nothing stays open, anchors are forgotten.
    fn end_document(&mut self) {
        self.block.clear();
        self.flow = 0;
        self.block_scalar = None;
        while self.open.pop().is_some_and(|a| {
            self.anchors.insert(a.name, self.nodes - a.start);
            true
        }) {}
        self.anchors.clear();
    }

    /// A block-context line indented `indent`: closes the collections and anchors it ends.
    fn dedent(&mut self, indent: usize, entry: bool) {
        while self.block.last().is_some_and(|(col, _)| *col > indent) {
            self.block.pop();
        }
        while let Some(anchor) = self.open.last() {
            let ends = match anchor.end {
                AnchorEnd::Block(None) => false,
                AnchorEnd::Block(Some((col, owner))) => {
                    indent < col || (indent == col && !(entry && owner == Level::Mapping))
                }
                AnchorEnd::Flow(_) => false,
            };
            if !ends {
                break;
            }
            let anchor = self.open.pop().expect("checked above");
            self.anchors.insert(anchor.name, self.nodes - anchor.start);
        }
    }

    fn depth_check(&self, line: usize, column: usize) -> Result<(), Refusal> {
        if self.block.len() + self.flow > self.max_depth {
            return Err(Refusal {
                line,
                column: column + 1,
                reason: Reason::TooDeep {
                    limit: self.max_depth,
                },
            });
        }
        Ok(())
    }

    /// A block collection level at `col` (a key or a `- ` entry).
    fn level(&mut self, col: usize, kind: Level, line: usize) -> Result<(), Refusal> {
        if let Some(&(top, top_kind)) = self.block.last() {
            if top == col && top_kind == kind {
                return Ok(());
            }
            if top == col && top_kind == Level::Sequence && kind == Level::Mapping {
                // `key:` then `- a` at the key's column, then the next key: the list ended.
                self.block.pop();
                return self.level(col, kind, line);
            }
        }
        self.block.push((col, kind));
        self.depth_check(line, col)
    }

    /// Reads the tokens of one line from `from`.
    fn tokens(&mut self, chars: &[char], from: usize, line: usize) -> Result<(), Refusal> {
        let mut i = from;
        // Column where the current token (a scalar that may turn out to be a key) began.
        let mut token: Option<usize> = None;
        // Inside a plain scalar: indicators are text until `: `, ` #` or (in flow) `,[]{}`.
        let mut plain = false;
        let mut after_space = true;
        while i < chars.len() {
            let c = chars[i];
            if let Some(q) = self.quote {
                if c == '\\' && q == '"' {
                    i += 2;
                    continue;
                }
                if c == q {
                    if q == '\'' && chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    self.quote = None;
                }
                i += 1;
                after_space = false;
                continue;
            }
            let next = chars.get(i + 1);
            let after_flow = self.flow > 0 && i > 0 && is_flow_indicator(chars[i - 1]);
            let at_start = !plain && (after_space || after_flow);
            let key_end =
                is_blank(next) || (self.flow > 0 && next.is_some_and(|n| is_flow_indicator(*n)));
            match c {
                ' ' | '\t' => {
                    after_space = true;
                    i += 1;
                    continue;
                }
                '#' if after_space => return Ok(()),
                ':' if key_end => {
                    if self.flow == 0 {
                        let key = token.unwrap_or(i);
                        self.level(key, Level::Mapping, line)?;
                    }
                    plain = false;
                    token = None;
                }
                _ if plain && !(self.flow > 0 && is_flow_indicator(c)) => {}
                '[' | '{' if at_start || self.flow > 0 => {
                    self.node();
                    self.flow += 1;
                    self.depth_check(line, i)?;
                    plain = false;
                    token = None;
                }
                ']' | '}' if self.flow > 0 => {
                    self.flow -= 1;
                    self.close_flow();
                    plain = false;
                    token = Some(i);
                }
                ',' if self.flow > 0 => {
                    plain = false;
                    token = None;
                }
                _ if !at_start => {}
                '"' | '\'' => {
                    self.node();
                    token = Some(i);
                    self.quote = Some(c);
                }
                '-' if self.flow == 0 && is_blank(next) => {
                    self.level(i, Level::Sequence, line)?;
                    token = None;
                }
                '?' if is_blank(next) => {
                    if self.flow == 0 {
                        self.level(i, Level::Mapping, line)?;
                    }
                    token = None;
                }
                '|' | '>' if self.flow == 0 => {
                    self.node();
                    let parent = self.block.last().map_or(-1, |(col, _)| *col as isize);
                    self.block_scalar = Some(parent);
                    return Ok(());
                }
                '&' => {
                    let end = word_end(chars, i + 1);
                    let name: String = chars[i + 1..end].iter().collect();
                    self.anchor(name, chars, end);
                    i = end;
                    after_space = false;
                    continue;
                }
                '*' => {
                    let end = word_end(chars, i + 1);
                    let name: String = chars[i + 1..end].iter().collect();
                    self.alias(&name, line, i)?;
                    token = Some(i);
                    i = end;
                    after_space = false;
                    continue;
                }
                '!' => {
                    i = word_end(chars, i + 1);
                    after_space = false;
                    continue;
                }
                _ => {
                    // A plain scalar begins (or a key: `token` remembers where).
                    self.node();
                    token = Some(i);
                    plain = true;
                }
            }
            after_space = false;
            i += 1;
        }
        Ok(())
    }

    fn node(&mut self) {
        self.nodes = self.nodes.saturating_add(1);
    }

    /// `&name` at the end of `chars[..after]`: the node it names is a flow collection on this
    /// line, a block collection on the lines below, or a scalar (one node).
    fn anchor(&mut self, name: String, chars: &[char], after: usize) {
        let mut j = after;
        loop {
            while chars.get(j).is_some_and(|c| *c == ' ' || *c == '\t') {
                j += 1;
            }
            if chars.get(j) == Some(&'!') {
                j = word_end(chars, j + 1);
                continue;
            }
            break;
        }
        let end = match chars.get(j) {
            None | Some('#') if self.flow == 0 => AnchorEnd::Block(self.block.last().copied()),
            Some('[' | '{') => AnchorEnd::Flow(self.flow),
            _ => {
                // A scalar (or something the parser will refuse): one node.
                self.anchors.insert(name, 1);
                return;
            }
        };
        self.open.push(OpenAnchor {
            name,
            start: self.nodes,
            end,
        });
    }

    /// Closes the flow anchors a closing bracket ends.
    fn close_flow(&mut self) {
        while let Some(anchor) = self.open.last() {
            match anchor.end {
                AnchorEnd::Flow(depth) if self.flow <= depth => {
                    let anchor = self.open.pop().expect("checked above");
                    self.anchors.insert(anchor.name, self.nodes - anchor.start);
                }
                _ => break,
            }
        }
    }

    /// `*name`: counts what it expands to.
    fn alias(&mut self, name: &str, line: usize, col: usize) -> Result<(), Refusal> {
        self.found.first_alias.get_or_insert((line, col + 1));
        // An alias to an unknown anchor is the parser's error to report; count it as one node.
        let size = self.anchors.get(name).copied().unwrap_or(1).max(1);
        self.nodes = self.nodes.saturating_add(size);
        if self.nodes > self.max_nodes {
            return Err(Refusal {
                line,
                column: col + 1,
                reason: Reason::Expansion {
                    alias: name.to_owned(),
                    limit: self.max_nodes,
                },
            });
        }
        Ok(())
    }
}

/// The end of an anchor, alias or tag name: the next blank or flow indicator.
fn word_end(chars: &[char], from: usize) -> usize {
    let mut j = from;
    while j < chars.len() && !matches!(chars[j], ' ' | '\t') && !is_flow_indicator(chars[j]) {
        j += 1;
    }
    j
}
