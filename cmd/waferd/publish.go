package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/publish"
)

// publishing is the publisher of [publish], wired for run and serve: its
// outbox opened, the runs a crash left behind committed again; nothing is
// sent before start.
type publishing struct {
	pub    *publish.Publisher
	outbox *publish.Outbox
	cancel context.CancelFunc
	done   chan struct{}
}

// openPublishing opens the outbox and the publisher when [publish] is
// enabled (nil, nil otherwise). interrupted are the runs MarkInterrupted
// just marked. Its errors are the configuration's: credentials, TLS files,
// an outbox that cannot be opened.
func openPublishing(cfg *config.Config, store *results.Store, interrupted []results.Run, logs *logging.Root) (*publishing, error) {
	pc := cfg.Publish
	if !pc.Enabled {
		return nil, nil
	}
	pcfg := publish.Config{
		Tool: pc.ToolName(), ClientID: pc.ClientID, Prefix: pc.TopicPrefix, Brokers: pc.Brokers, QoS: byte(pc.QoS),
		KeepAlive: time.Duration(pc.KeepAliveS) * time.Second, DrainTimeout: config.MS(pc.DrainTimeoutMS),
		Store: store, Log: logs.For("publish"), Version: version,
	}
	if pc.CredentialsFile != "" {
		c, err := config.LoadCredentials(pc.CredentialsFile)
		if err != nil {
			return nil, err
		}
		pcfg.Username, pcfg.Password = c.Username, c.Password
	}
	tlsNeeded := pc.CAFile != "" || pc.CertFile != ""
	for _, b := range pc.Brokers {
		scheme, _, _ := strings.Cut(b, "://")
		tlsNeeded = tlsNeeded || config.BrokerSchemes[scheme]
	}
	if tlsNeeded {
		t, err := publish.TLSConfig(pc.CAFile, pc.CertFile, pc.KeyFile)
		if err != nil {
			return nil, err
		}
		pcfg.TLS = t
	}
	ob, err := publish.OpenOutbox(pc.OutboxPath(cfg.Data.Dir), int64(pc.OutboxMaxMB)<<20)
	if err != nil {
		return nil, err
	}
	pcfg.Outbox = ob
	pub, err := publish.New(pcfg)
	if err != nil {
		return nil, errors.Join(err, ob.Close())
	}
	if err := pub.Recover(interrupted); err != nil {
		logs.For("publish").Errorf("%v", err)
	}
	return &publishing{pub: pub, outbox: ob}, nil
}

// start connects and sends, in the background.
func (p *publishing) start() {
	if p == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		_ = p.pub.Run(ctx)
	}()
}

// stop commits what the daemon said last, sends what it can within
// [publish] drain_timeout_ms if connected, marks the tool offline and
// closes the outbox. Call it after the daemon's Shutdown.
func (p *publishing) stop() error {
	if p == nil {
		return nil
	}
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
	if err := p.outbox.Close(); err != nil {
		return fmt.Errorf("publish: outbox: %w", err)
	}
	return nil
}
