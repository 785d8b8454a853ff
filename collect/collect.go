// Package collect is the fleet's consumer: it subscribes to every tool's
// messages under a topic prefix (package publish) and writes the runs,
// sites, defects and events of all tools into PostgreSQL, where a yield
// engineer queries them together.
//
// Delivery is at least once; writes are idempotent (every row has the
// message's natural key: tool, run and site; events their id), so a
// message received twice changes nothing the second time. A message is
// acknowledged to the broker only once its transaction committed. The
// session is persistent (a fixed client id): while the collector is down
// the broker keeps its messages. When a tool's ledger lists a run that is
// missing here, or whose sites are not all here (a broker that crashed
// before it forwarded them), the collector asks the tool for it again.
package collect

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/publish"
)

// Config configures a collector.
type Config struct {
	Brokers  []string
	ClientID string // fixed: the broker keeps the session while the collector is down
	Prefix   string
	TLS      *tls.Config
	Username string
	Password string
	// DB is a PostgreSQL connection string (pgx: a URL or key=value; empty
	// takes the PG* environment variables).
	DB  string
	Log *logging.Log
}

// Stats counts what a collector did since it started.
type Stats struct {
	Received, Stored, Ignored, Resends uint64
}

// Collector writes the fleet's messages into PostgreSQL.
type Collector struct {
	cfg Config
	log *logging.Log
	db  *pgxpool.Pool

	mu    sync.Mutex
	stats Stats
}

// Open connects to the database and migrates its schema. It retries a
// database that does not answer yet until ctx ends.
func Open(ctx context.Context, cfg Config) (*Collector, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("collect: no broker")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "waferd"
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "waferd-collect"
	}
	log := cfg.Log
	if log == nil {
		log = logging.Discard()
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DB)
	if err != nil {
		return nil, fmt.Errorf("collect: database: %w", err)
	}
	db, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("collect: database: %w", err)
	}
	c := &Collector{cfg: cfg, log: log, db: db}
	wait := 200 * time.Millisecond
	logged := false
	for {
		err = Migrate(ctx, db)
		if err == nil {
			break
		}
		if ctx.Err() != nil || strings.Contains(err.Error(), "newer than") {
			db.Close()
			return nil, err
		}
		if !logged {
			log.Warnf("database not ready: %v (retrying)", err)
			logged = true
		}
		if sleep(ctx, wait) != nil {
			db.Close()
			return nil, err
		}
		wait = min(2*wait, 5*time.Second)
	}
	return c, nil
}

// Close closes the database connections.
func (c *Collector) Close() { c.db.Close() }

// Stats returns what the collector did so far.
func (c *Collector) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Run subscribes to <prefix>/# and stores every message until ctx ends;
// it reconnects by itself. It returns nil when ctx ends.
func (c *Collector) Run(ctx context.Context) error {
	cfg := c.cfg
	filter := cfg.Prefix + "/#"
	var client mqtt.Client
	handler := func(_ mqtt.Client, m mqtt.Message) { c.handle(ctx, client, m) }
	opts := mqtt.NewClientOptions().
		SetClientID(cfg.ClientID).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(500 * time.Millisecond).
		SetMaxReconnectInterval(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true).
		SetAutoAckDisabled(true).
		// The session's queued messages may come before the subscription
		// below is made again in this client: the same handler takes them.
		SetDefaultPublishHandler(handler).
		SetOnConnectHandler(func(cl mqtt.Client) {
			c.log.Noticef("connected to %s: subscribing to %s", strings.Join(cfg.Brokers, ", "), filter)
			// The broker may have lost the session (a restart without
			// persistence): subscribe at every connection.
			tok := cl.Subscribe(filter, 1, handler)
			go func() {
				if tok.WaitTimeout(30*time.Second) && tok.Error() != nil {
					c.log.Errorf("subscribing to %s: %v", filter, tok.Error())
				}
			}()
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			c.log.Warnf("connection to the broker lost: %v (reconnecting)", err)
		})
	for _, b := range cfg.Brokers {
		opts.AddBroker(b)
	}
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	if cfg.Username != "" || cfg.Password != "" {
		opts.SetUsername(cfg.Username)
		opts.SetPassword(cfg.Password)
	}
	client = mqtt.NewClient(opts)
	client.Connect() // with ConnectRetry it keeps trying in the background
	<-ctx.Done()
	client.Disconnect(250)
	return nil
}

// handle stores one message, retrying the database until it succeeds or
// ctx ends, and only then acknowledges it.
func (c *Collector) handle(ctx context.Context, client mqtt.Client, m mqtt.Message) {
	c.count(func(s *Stats) { s.Received++ })
	wait := 200 * time.Millisecond
	logged := false
	for {
		stored, err := c.store(ctx, client, m.Topic(), m.Payload())
		if err == nil {
			m.Ack()
			c.count(func(s *Stats) {
				if stored {
					s.Stored++
				} else {
					s.Ignored++
				}
			})
			return
		}
		var bad *badMessage
		if errors.As(err, &bad) {
			c.log.Warnf("ignored a message on %s: %v", m.Topic(), err)
			m.Ack()
			c.count(func(s *Stats) { s.Ignored++ })
			return
		}
		if ctx.Err() != nil {
			return // not acknowledged: the broker sends it again
		}
		if !logged {
			c.log.Errorf("storing a message of %s: %v (retrying)", m.Topic(), err)
			logged = true
		}
		if sleep(ctx, wait) != nil {
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (c *Collector) count(f func(*Stats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// badMessage is a message that can never be stored (not ours, or not
// valid): it is acknowledged and skipped.
type badMessage struct{ err error }

func (b *badMessage) Error() string { return b.err.Error() }

// store writes one message; stored is false for messages it has no use
// for (resend requests, other versions).
func (c *Collector) store(ctx context.Context, client mqtt.Client, topic string, payload []byte) (stored bool, err error) {
	rest, ok := strings.CutPrefix(topic, c.cfg.Prefix+"/")
	if !ok {
		return false, nil
	}
	tool, sub, ok := strings.Cut(rest, "/")
	if !ok {
		return false, nil
	}
	var v struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(payload, &v); err != nil {
		return false, &badMessage{fmt.Errorf("not JSON: %w", err)}
	}
	if v.V != publish.SchemaVersion {
		return false, &badMessage{fmt.Errorf("schema version %d, this collector reads %d", v.V, publish.SchemaVersion)}
	}
	decode := func(dst any) error {
		if err := json.Unmarshal(payload, dst); err != nil {
			return &badMessage{err}
		}
		return nil
	}
	switch sub {
	case publish.TopicOnline:
		var o publish.Online
		if err := decode(&o); err != nil {
			return false, err
		}
		// In the order the broker delivers them: a last will (whose since
		// is its connection's) follows the online it covers.
		_, err = c.db.Exec(ctx, `INSERT INTO tools (tool, online, online_since, version) VALUES ($1, $2, $3, $4)
			ON CONFLICT (tool) DO UPDATE SET online = $2, online_since = $3, version = $4`, tool, o.Online, o.Since, o.Version)
		return err == nil, err
	case publish.TopicState:
		var s publish.State
		if err := decode(&s); err != nil {
			return false, err
		}
		return true, c.tx(ctx, func(tx pgx.Tx) error {
			if err := insertEvent(ctx, tx, s.Header, "state", payload); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO tools (tool, state, latched, latch_reason, state_at) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (tool) DO UPDATE SET state = $2, latched = $3, latch_reason = $4, state_at = $5
				WHERE tools.state_at IS NULL OR tools.state_at <= $5`, tool, s.State, s.Latched, s.LatchReason, s.Time)
			return err
		})
	case publish.TopicStop, publish.TopicLatch:
		var h publish.Header
		if err := decode(&h); err != nil {
			return false, err
		}
		return true, c.tx(ctx, func(tx pgx.Tx) error {
			return insertEvent(ctx, tx, h, strings.TrimPrefix(sub, "event/"), payload)
		})
	case publish.TopicStarted:
		var s publish.Started
		if err := decode(&s); err != nil {
			return false, err
		}
		_, err := c.db.Exec(ctx, `INSERT INTO runs (tool, run_id, recipe, sites_total, started_at, dir) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (tool, run_id) DO UPDATE SET recipe = $3, sites_total = $4, started_at = $5, dir = $6`,
			tool, s.RunID, s.Recipe, s.SitesTotal, s.StartedAt, s.Dir)
		return err == nil, err
	case publish.TopicSite:
		var s publish.Site
		if err := decode(&s); err != nil {
			return false, err
		}
		return true, c.tx(ctx, func(tx pgx.Tx) error { return insertSite(ctx, tx, tool, s) })
	case publish.TopicEnded:
		var e publish.Ended
		if err := decode(&e); err != nil {
			return false, err
		}
		_, err := c.db.Exec(ctx, `INSERT INTO runs (tool, run_id, state, reason, error, ended_at, sites_total, sites_done, sites_failed, defects_total, complete)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (tool, run_id) DO UPDATE SET state = $3, reason = $4, error = $5, ended_at = $6, sites_total = $7,
				sites_done = $8, sites_failed = $9, defects_total = $10, complete = $11`,
			tool, e.RunID, e.State, e.Reason, e.Error, e.Time, e.SitesTotal, e.SitesDone, e.SitesFailed, e.DefectsTotal, e.Complete)
		return err == nil, err
	case publish.TopicRecord:
		var r publish.Record
		if err := decode(&r); err != nil {
			return false, err
		}
		rec, err := json.Marshal(r.Record)
		if err != nil {
			return false, &badMessage{err}
		}
		run := r.Record
		_, err = c.db.Exec(ctx, `INSERT INTO runs (tool, run_id, recipe, state, reason, error, started_at, ended_at,
				sites_total, sites_done, sites_failed, defects_total, complete, dir, record)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
			ON CONFLICT (tool, run_id) DO UPDATE SET recipe = $3, state = $4, reason = $5, error = $6, started_at = $7,
				ended_at = $8, sites_total = $9, sites_done = $10, sites_failed = $11, defects_total = $12, complete = $13,
				dir = $14, record = $15`,
			tool, r.RunID, run.Recipe, string(run.State), run.Reason, run.Error, run.StartedAt, run.EndedAt,
			run.SitesTotal, run.SitesDone, run.SitesFailed, run.DefectsTotal, run.Complete, r.Dir, rec)
		return err == nil, err
	case publish.TopicLedger:
		var l publish.Ledger
		if err := decode(&l); err != nil {
			return false, err
		}
		return true, c.checkLedger(ctx, client, tool, l)
	}
	return false, nil
}

func (c *Collector) tx(ctx context.Context, f func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, c.db, f)
}

func insertEvent(ctx context.Context, tx pgx.Tx, h publish.Header, kind string, payload []byte) error {
	_, err := tx.Exec(ctx, `INSERT INTO events (id, tool, kind, time, payload) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO NOTHING`, h.ID, h.Tool, kind, h.Time, payload)
	return err
}

// insertSite writes a site and its defects, once.
func insertSite(ctx context.Context, tx pgx.Tx, tool string, s publish.Site) error {
	// A site may come before its run's start (the start dropped from a
	// full outbox): the run's row exists either way.
	if _, err := tx.Exec(ctx, `INSERT INTO runs (tool, run_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, tool, s.RunID); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO sites (tool, run_id, idx, die_col, die_row, x_mm, y_mm, defects, result, image, saved_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING`,
		tool, s.RunID, s.Index, s.Die[0], s.Die[1], s.XMM, s.YMM, len(s.Defects), s.Result, s.Image, s.Time)
	if err != nil || tag.RowsAffected() == 0 {
		return err // stored before
	}
	for n, d := range s.Defects {
		if _, err := tx.Exec(ctx, `INSERT INTO defects (tool, run_id, idx, n, x_mm, y_mm, box_px, area_px, area_um2, peak)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
			tool, s.RunID, s.Index, n, d.XMM, d.YMM, d.Box[:], d.AreaPx, d.AreaUM2, d.Peak); err != nil {
			return err
		}
	}
	return nil
}

// checkLedger asks the tool again for every run of its ledger that is
// missing here or incomplete (its record, or some of its sites).
func (c *Collector) checkLedger(ctx context.Context, client mqtt.Client, tool string, l publish.Ledger) error {
	if _, err := c.db.Exec(ctx, `INSERT INTO tools (tool, ledger_at) VALUES ($1, $2)
		ON CONFLICT (tool) DO UPDATE SET ledger_at = $2`, tool, l.Time); err != nil {
		return err
	}
	ids := make([]string, len(l.Runs))
	for i, r := range l.Runs {
		ids[i] = r.RunID
	}
	rows, err := c.db.Query(ctx, `SELECT r.run_id, r.record IS NOT NULL,
			(SELECT count(*) FROM sites s WHERE s.tool = r.tool AND s.run_id = r.run_id)
		FROM runs r WHERE r.tool = $1 AND r.run_id = ANY($2)`, tool, ids)
	if err != nil {
		return err
	}
	type have struct {
		record bool
		sites  int
	}
	got := map[string]have{}
	for rows.Next() {
		var id string
		var h have
		if err := rows.Scan(&id, &h.record, &h.sites); err != nil {
			rows.Close()
			return err
		}
		got[id] = h
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range l.Runs {
		h, ok := got[r.RunID]
		if ok && h.record && h.sites >= r.SitesDone {
			continue
		}
		req, _ := json.Marshal(publish.Resend{V: publish.SchemaVersion, RunID: r.RunID})
		client.Publish(publish.Topic(c.cfg.Prefix, tool, publish.TopicResend), 1, false, req)
		c.count(func(s *Stats) { s.Resends++ })
		c.log.Noticef("tool %s: run %s is incomplete here (record %v, %d of %d sites): asked for it again", tool, r.RunID, h.record, h.sites, r.SitesDone)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
