package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// send is the sender: it connects to the broker (again after every loss,
// with a growing wait), publishes the outbox in order and deletes what the
// broker acknowledged. When ctx ends it waits for committed (the
// committer's last commit), goes on draining for up to DrainTimeout if
// connected, marks the tool offline and disconnects.
func (p *Publisher) send(ctx context.Context, committed <-chan struct{}) {
	const retryMin = 500 * time.Millisecond
	wait := retryMin
	for ctx.Err() == nil {
		c, lost, err := p.connect(ctx)
		if err != nil {
			p.setDown(err)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			wait = min(2*wait, p.cfg.RetryMax)
			continue
		}
		wait = retryMin
		p.setUp()
		// A broker that crashed may have lost what it had acknowledged:
		// the ledger, behind what waits, lets collectors ask for it.
		if dropped, err := p.ob.Update(p.putLedgerIfAny); err != nil {
			p.log.Errorf("%v", err)
		} else {
			p.afterPut(dropped)
		}
		err = p.drain(ctx, committed, c, lost)
		if err == nil { // ctx ended and the outbox is drained (or the time is up)
			p.goOffline(c)
			return
		}
		c.Disconnect(0)
		p.setDown(err)
	}
}

// connect makes one connection attempt to the brokers (in order) and
// announces the tool online. lost receives why the connection ended.
func (p *Publisher) connect(ctx context.Context) (mqtt.Client, <-chan error, error) {
	cfg := p.cfg
	will, _ := json.Marshal(Online{V: SchemaVersion, Tool: cfg.Tool, Online: false, Version: cfg.Version, Since: time.Now().UTC()})
	lost := make(chan error, 1)
	opts := mqtt.NewClientOptions().
		SetClientID(cfg.ClientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(cfg.KeepAlive).
		SetPingTimeout(cfg.ConnectTimeout).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(cfg.AckTimeout).
		SetOrderMatters(false).
		SetBinaryWill(Topic(cfg.Prefix, cfg.Tool, TopicOnline), will, 1, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case lost <- err:
			default:
			}
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
	c := mqtt.NewClient(opts)
	if err := p.wait(ctx, c.Connect(), cfg.ConnectTimeout+time.Second); err != nil {
		c.Disconnect(0)
		return nil, nil, p.explain(err)
	}
	online, _ := json.Marshal(Online{V: SchemaVersion, Tool: cfg.Tool, Online: true, Version: cfg.Version, Since: time.Now().UTC()})
	if err := p.wait(ctx, c.Publish(Topic(cfg.Prefix, cfg.Tool, TopicOnline), 1, true, online), cfg.AckTimeout); err != nil {
		c.Disconnect(0)
		return nil, nil, fmt.Errorf("announcing the tool online: %w", err)
	}
	resend := Topic(cfg.Prefix, cfg.Tool, TopicResend)
	if err := p.wait(ctx, c.Subscribe(resend, 1, p.onResend), cfg.AckTimeout); err != nil {
		c.Disconnect(0)
		return nil, nil, fmt.Errorf("subscribing to %s: %w", resend, err)
	}
	return c, lost, nil
}

// explain turns a connection error into what to check.
func (p *Publisher) explain(err error) error {
	s := err.Error()
	switch {
	case strings.Contains(s, "bad user name or password"), strings.Contains(s, "not Authorized"):
		return fmt.Errorf("the broker refused the connection: %v (check the credentials file)", err)
	case strings.Contains(s, "certificate"), strings.Contains(s, "tls:"), strings.Contains(s, "x509"):
		return fmt.Errorf("TLS: %v (check ca_file, cert_file and key_file)", err)
	case p.cfg.TLS != nil && (strings.Contains(s, "reset by peer") || strings.Contains(s, "EOF") || strings.Contains(s, "broken pipe")):
		// With TLS 1.3 a refused client certificate shows only as the
		// broker closing the connection.
		return fmt.Errorf("TLS: the broker closed the connection during the handshake: %v (does it want a client certificate, or refuse this one? check ca_file, cert_file and key_file)", err)
	}
	return err
}

// onResend is the handler of TopicResend (a collector asks for a run
// again); it runs on paho's goroutine and only queues the run.
func (p *Publisher) onResend(_ mqtt.Client, m mqtt.Message) {
	var r Resend
	if err := json.Unmarshal(m.Payload(), &r); err != nil || r.RunID == "" {
		p.log.Warnf("ignored a resend request that is not {\"v\":1,\"run_id\":...}")
		return
	}
	select {
	case p.resend <- r.RunID:
	default:
		p.log.Warnf("too many resend requests waiting: run %s not queued", r.RunID)
	}
}

// drain publishes the outbox, Window messages at a time, until the
// connection is lost (its error), or ctx has ended, the last commit is
// done and the outbox is empty or DrainTimeout has passed (nil).
func (p *Publisher) drain(ctx context.Context, committed <-chan struct{}, c mqtt.Client, lost <-chan error) error {
	var deadline <-chan time.Time
	ctxDone := ctx.Done()
	for {
		batch, err := p.ob.Peek(p.cfg.Window)
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			if ctxDone == nil {
				select {
				case <-committed:
					if n, _ := p.ob.Depth(); n == 0 {
						return nil // all committed, all sent
					}
					continue
				default:
				}
			}
			select {
			case err := <-lost:
				return fmt.Errorf("connection lost: %w", err)
			case <-ctxDone:
				ctxDone, deadline = nil, time.After(p.cfg.DrainTimeout)
			case <-committed:
				if ctxDone == nil {
					return nil
				}
			case <-deadline:
				return nil
			case <-p.outWake:
			}
			continue
		}
		toks := make([]mqtt.Token, len(batch))
		for i, e := range batch {
			toks[i] = c.Publish(e.Topic, p.cfg.QoS, e.Retain, e.Payload)
		}
		var acked []uint64
		var failed error
		timeout := time.NewTimer(p.cfg.AckTimeout)
		for i, tok := range toks {
			select {
			case <-tok.Done():
				err = tok.Error()
			case err = <-lost:
				err = fmt.Errorf("connection lost: %w", err)
			case <-timeout.C:
				err = fmt.Errorf("no acknowledgement within %v", p.cfg.AckTimeout)
			}
			if err != nil {
				failed = err
				p.countRetried(len(toks) - i)
				break
			}
			acked = append(acked, batch[i].Seq)
		}
		timeout.Stop()
		if len(acked) > 0 {
			if err := p.ob.Delete(acked); err != nil {
				return err
			}
			p.countSent(len(acked))
		}
		if failed != nil {
			return failed
		}
		select {
		case <-deadline:
			return nil
		default:
		}
	}
}

// goOffline marks the tool offline (a clean disconnect sends no will) and
// disconnects.
func (p *Publisher) goOffline(c mqtt.Client) {
	off, _ := json.Marshal(Online{V: SchemaVersion, Tool: p.cfg.Tool, Online: false, Version: p.cfg.Version, Since: time.Now().UTC()})
	tok := c.Publish(Topic(p.cfg.Prefix, p.cfg.Tool, TopicOnline), 1, true, off)
	tok.WaitTimeout(time.Second)
	c.Disconnect(250)
	p.smu.Lock()
	p.connected, p.since, p.lastErr = false, time.Now(), "shut down"
	p.smu.Unlock()
	p.log.Infof("disconnected from the broker (%s)", p.queueText())
}

// queueText says what waits in the outbox.
func (p *Publisher) queueText() string {
	n, b := p.ob.Depth()
	if n == 0 {
		return "outbox empty"
	}
	return fmt.Sprintf("%d messages (%d bytes) wait in the outbox", n, b)
}

// wait waits for tok, ctx or timeout.
func (p *Publisher) wait(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return fmt.Errorf("no answer within %v", timeout)
	}
}

func (p *Publisher) setUp() {
	p.smu.Lock()
	p.connected, p.since, p.lastErr = true, time.Now(), ""
	p.smu.Unlock()
	p.log.Noticef("connected to %s as %s", strings.Join(p.cfg.Brokers, ", "), p.cfg.ClientID)
	p.kickSender()
}

// setDown records why the connection failed or ended. It logs one
// warning per episode (the connection lost, or the first attempt that
// failed); a different reason later in the same episode is logged at info
// level, and the same one not again: a broker down for hours is one line.
func (p *Publisher) setDown(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	p.smu.Lock()
	was := p.connected
	first := was || p.lastErr == ""
	same := !was && p.lastErr == err.Error()
	if first {
		p.since = time.Now()
	}
	p.connected, p.lastErr = false, err.Error()
	p.smu.Unlock()
	switch {
	case first:
		p.log.Warnf("broker %s: %v (%s; retrying)", strings.Join(p.cfg.Brokers, ", "), err, p.queueText())
	case !same:
		p.log.Infof("broker %s still unreachable: %v", strings.Join(p.cfg.Brokers, ", "), err)
	}
}

func (p *Publisher) countSent(n int) {
	p.smu.Lock()
	p.sent += uint64(n)
	if n > 0 {
		p.fullSince = time.Time{}
	}
	p.smu.Unlock()
}

func (p *Publisher) countRetried(n int) {
	p.smu.Lock()
	p.retried += uint64(n)
	p.smu.Unlock()
}
