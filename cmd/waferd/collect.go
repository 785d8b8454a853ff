package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/waferd/waferd/collect"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/publish"
	"github.com/waferd/waferd/stop"
)

// cmdCollect is the fleet's consumer: it subscribes to every tool's
// messages on the brokers and writes them into PostgreSQL (package
// collect) until SIGTERM or SIGINT. It exits 0 then, 2 on bad options, 4
// if the database cannot be prepared.
func cmdCollect(sigs *signals, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("waferd collect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var brokers []string
	fs.Func("broker", "MQTT broker `URL` (mqtt://host:1883, mqtts://host:8883); repeatable, tried in order", func(v string) error {
		if err := config.CheckBroker(v); err != nil {
			return err
		}
		brokers = append(brokers, v)
		return nil
	})
	db := fs.String("db", "", "PostgreSQL connection `string` (postgres://user@host/db or key=value; empty: the PG* environment variables; put the password in ~/.pgpass or PGPASSFILE, not here)")
	prefix := fs.String("prefix", "waferd", "the tools' topic `prefix` ([publish] topic_prefix)")
	clientID := fs.String("client-id", "waferd-collect", "MQTT client `id`: fixed, so that the broker keeps the messages while the collector is down")
	creds := fs.String("credentials", "", "`file` with the broker's username and password (as [publish] credentials_file)")
	caFile := fs.String("ca-file", "", "CA `file` of the broker's certificate (mqtts://; empty: the system's)")
	certFile := fs.String("cert-file", "", "client certificate `file` (mqtts://)")
	keyFile := fs.String("key-file", "", "client key `file` (mqtts://)")
	logLevel := fs.String("log-level", "info", "log `level`: error, warning, notice, info or debug")
	fs.Usage = func() { fmt.Fprint(stderr, collectUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "waferd collect: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if len(brokers) == 0 {
		fmt.Fprintln(stderr, "waferd collect: give --broker URL")
		return exitUsage
	}
	lvl, err := logging.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "waferd collect: --log-level: %v\n", err)
		return exitUsage
	}
	cfg := collect.Config{Brokers: brokers, ClientID: *clientID, Prefix: *prefix, DB: *db}
	if *creds != "" {
		c, err := config.LoadCredentials(*creds)
		if err != nil {
			fmt.Fprintf(stderr, "waferd collect: %v\n", err)
			return exitUsage
		}
		cfg.Username, cfg.Password = c.Username, c.Password
	}
	if *caFile != "" || *certFile != "" || *keyFile != "" {
		if cfg.TLS, err = publish.TLSConfig(*caFile, *certFile, *keyFile); err != nil {
			fmt.Fprintf(stderr, "waferd collect: %v\n", err)
			return exitUsage
		}
	}
	logs := logging.Auto(stderr, lvl)
	log := logs.For("collect")
	cfg.Log = log
	ctx := sigs.Context()
	c, err := collect.Open(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		log.Errorf("%v", err)
		return exitFailed
	}
	defer c.Close()
	log.Noticef("database ready (schema version %d); collecting %s/# from %v", collect.SchemaVersion, *prefix, brokers)
	_ = c.Run(ctx)
	s := c.Stats()
	log.Noticef("stopped: %d messages received, %d stored, %d ignored, %d runs asked for again", s.Received, s.Stored, s.Ignored, s.Resends)
	return 0
}

// collectReason: the collector stops on SIGTERM and SIGINT alike.
func collectReason(os.Signal) stop.Reason { return stop.Shutdown }

const collectUsage = `usage: waferd collect --broker URL... [--db DSN] [--prefix P] [--credentials FILE] [TLS options]

Subscribes to every tool's messages under the prefix and writes runs,
sites, defects and events into PostgreSQL (migrating its schema at start),
idempotently. Runs until SIGTERM or SIGINT; exits 0 then, 2 on bad
options, 4 if the database cannot be prepared.

`
