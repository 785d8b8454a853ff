package collect

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are applied in order, each once, in one transaction per
// start (schema_version records which). Never edit one that has shipped:
// add the next.
var migrations = []string{
	// 1: tools, runs, sites, defects, events.
	`CREATE TABLE tools (
		tool          text PRIMARY KEY,
		online        boolean,
		online_since  timestamptz,
		version       text,
		state         text,
		latched       boolean,
		latch_reason  text,
		state_at      timestamptz,
		ledger_at     timestamptz
	);
	CREATE TABLE runs (
		tool          text NOT NULL,
		run_id        text NOT NULL,
		recipe        text,
		state         text NOT NULL DEFAULT 'running',
		reason        text,
		error         text,
		started_at    timestamptz,
		ended_at      timestamptz,
		sites_total   integer,
		sites_done    integer,
		sites_failed  integer,
		defects_total integer,
		complete      boolean,
		dir           text,
		record        jsonb,
		PRIMARY KEY (tool, run_id)
	);
	CREATE INDEX runs_ended ON runs (ended_at);
	CREATE TABLE sites (
		tool      text NOT NULL,
		run_id    text NOT NULL,
		idx       integer NOT NULL,
		die_col   integer NOT NULL,
		die_row   integer NOT NULL,
		x_mm      double precision NOT NULL,
		y_mm      double precision NOT NULL,
		defects   integer NOT NULL,
		result    text,
		image     text,
		saved_at  timestamptz,
		PRIMARY KEY (tool, run_id, idx)
	);
	CREATE TABLE defects (
		tool      text NOT NULL,
		run_id    text NOT NULL,
		idx       integer NOT NULL,
		n         integer NOT NULL,
		x_mm      double precision NOT NULL,
		y_mm      double precision NOT NULL,
		box_px    integer[] NOT NULL,
		area_px   integer NOT NULL,
		area_um2  double precision NOT NULL,
		peak      integer NOT NULL,
		PRIMARY KEY (tool, run_id, idx, n)
	);
	CREATE TABLE events (
		id        text PRIMARY KEY,
		tool      text NOT NULL,
		kind      text NOT NULL,
		time      timestamptz NOT NULL,
		payload   jsonb NOT NULL
	);
	CREATE INDEX events_tool_time ON events (tool, time);`,
}

// SchemaVersion is the version of the database schema this collector
// writes.
var SchemaVersion = len(migrations)

// Migrate brings the database to SchemaVersion. Collectors starting at
// the same time take turns (an advisory lock); a database newer than this
// collector is an error.
func Migrate(ctx context.Context, db *pgxpool.Pool) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("collect: migrate: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7411018)`); err != nil {
		return fmt.Errorf("collect: migrate: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    integer PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("collect: migrate: %w", err)
	}
	var have int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&have); err != nil {
		return fmt.Errorf("collect: migrate: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("collect: the database has schema version %d, newer than this collector's %d: upgrade waferd", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
			return fmt.Errorf("collect: migration %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, v); err != nil {
			return fmt.Errorf("collect: migration %d: %w", v, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("collect: migrate: %w", err)
	}
	return nil
}

// Queries a yield engineer starts from (README "The collector"); the
// tests run them.
const (
	// QueryDefectsPerSite: per tool and recipe, completed runs of the last
	// 7 days, their sites and defects, worst first.
	QueryDefectsPerSite = `SELECT tool, recipe, count(*) AS runs, sum(sites_done) AS sites,
       sum(defects_total) AS defects,
       round(sum(defects_total)::numeric / nullif(sum(sites_done), 0), 3) AS defects_per_site
FROM runs
WHERE state = 'completed' AND ended_at > now() - interval '7 days'
GROUP BY tool, recipe
ORDER BY defects_per_site DESC NULLS LAST;`

	// QueryDiesAcrossTools: the dies of a recipe with defects on more than
	// one tool in the last day: a mask or process problem, not a tool's.
	QueryDiesAcrossTools = `SELECT s.die_col, s.die_row, count(DISTINCT s.tool) AS tools,
       count(*) AS sites, sum(s.defects) AS defects
FROM sites s JOIN runs r USING (tool, run_id)
WHERE r.recipe = 'demo' AND r.started_at > now() - interval '1 day' AND s.defects > 0
GROUP BY s.die_col, s.die_row
HAVING count(DISTINCT s.tool) > 1
ORDER BY tools DESC, defects DESC
LIMIT 20;`
)
