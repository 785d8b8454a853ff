package publish

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Message is one MQTT message waiting in the outbox.
type Message struct {
	Topic   string
	Retain  bool
	Payload []byte
}

// Entry is a message in the outbox with its place in the queue.
type Entry struct {
	Seq uint64 // position in the queue: entries are sent in Seq order
	Message
}

// Outbox is the tool's durable queue of messages for the broker, in a
// bbolt file. Update commits (fsync) before it returns, so a message that
// was appended survives a crash or a power loss; it leaves the outbox
// only through Delete, once the broker acknowledged it.
//
// The outbox also remembers which runs are open (their start was
// appended, their record not yet: Recover re-reads them from the results
// after a crash) and the recent finished runs (the ledger a collector
// checks itself against).
//
// Its size is bounded: when the payloads would exceed the limit, Tx.Put
// drops the oldest messages to make room (counted in the result) and never
// waits. All methods are safe for concurrent use; every method blocks on
// disk I/O.
type Outbox struct {
	db       *bolt.DB
	maxBytes int64

	mu    sync.Mutex // guards n and bytes, the cached totals of the msgs bucket
	n     int
	bytes int64
}

var (
	bucketMsgs   = []byte("msgs")   // seq (8 bytes, big-endian) -> encoded Message
	bucketOpen   = []byte("open")   // run id -> "" : runs started, record not yet appended
	bucketLedger = []byte("ledger") // run id -> JSON LedgerRun : recent finished runs
	bucketMeta   = []byte("meta")   // "events" -> uint64: the tool events' sequence; "epoch": when the file was made
)

// LedgerSize is how many finished runs the ledger keeps.
const LedgerSize = 200

// OpenOutbox opens (or creates) the outbox at path, bounded to maxBytes of
// payload and topic. It fails at once if another process holds it.
func OpenOutbox(path string, maxBytes int64) (*Outbox, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("publish: outbox %s: in use by another process", path)
		}
		return nil, fmt.Errorf("publish: outbox %s: %w", path, err)
	}
	o := &Outbox{db: db, maxBytes: maxBytes}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMsgs, bucketOpen, bucketLedger, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get([]byte("epoch")) == nil {
			if err := meta.Put([]byte("epoch"), []byte(strconv.FormatInt(time.Now().Unix(), 10))); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMsgs).ForEach(func(_, v []byte) error {
			o.n++
			o.bytes += int64(len(v))
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("publish: outbox %s: %w", path, err)
	}
	return o, nil
}

// Close closes the file.
func (o *Outbox) Close() error { return o.db.Close() }

// Path is the outbox's file.
func (o *Outbox) Path() string { return o.db.Path() }

// Depth returns how many messages wait and their size in bytes.
func (o *Outbox) Depth() (n int, bytes int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n, o.bytes
}

// MaxBytes is the outbox's bound.
func (o *Outbox) MaxBytes() int64 { return o.maxBytes }

// Tx is one transaction of Update: what it puts, opens and closes is
// committed together (one fsync), or not at all.
type Tx struct {
	o       *Outbox
	tx      *bolt.Tx
	size    int64 // payload bytes in the outbox, as of now in this transaction
	start   int64 // size when the transaction began
	dn      int
	dropped int
}

// Update runs f in one write transaction and commits it (fsync) before it
// returns. It returns how many old messages were dropped to stay within
// the bound. If f fails, nothing is committed.
func (o *Outbox) Update(f func(*Tx) error) (dropped int, err error) {
	var t *Tx
	err = o.db.Update(func(tx *bolt.Tx) error {
		o.mu.Lock()
		t = &Tx{o: o, tx: tx, size: o.bytes, start: o.bytes}
		o.mu.Unlock()
		return f(t)
	})
	if err != nil {
		return 0, fmt.Errorf("publish: outbox: %w", err)
	}
	o.mu.Lock()
	// Relative: a Delete committed just before this transaction may
	// update the totals after it began.
	o.n += t.dn
	o.bytes += t.size - t.start
	o.mu.Unlock()
	return t.dropped, nil
}

// Put queues m. When the outbox would exceed its bound, the oldest
// messages are dropped to make room; a message larger than the whole bound
// is dropped itself. Both count in Update's result.
func (t *Tx) Put(m Message) error {
	msgs := t.tx.Bucket(bucketMsgs)
	v := encodeMessage(m)
	if int64(len(v)) > t.o.maxBytes {
		t.dropped++
		return nil
	}
	c := msgs.Cursor()
	for k, old := c.First(); k != nil && t.size+int64(len(v)) > t.o.maxBytes; k, old = c.First() {
		t.size -= int64(len(old))
		t.dn--
		t.dropped++
		if err := c.Delete(); err != nil {
			return err
		}
	}
	seq, err := msgs.NextSequence()
	if err != nil {
		return err
	}
	if err := msgs.Put(seqKey(seq), v); err != nil {
		return err
	}
	t.dn++
	t.size += int64(len(v))
	return nil
}

// ForgetRun unmarks run id as started without a record (it has none to
// publish).
func (t *Tx) ForgetRun(id string) error { return t.tx.Bucket(bucketOpen).Delete([]byte(id)) }

// OpenRun marks run id as started.
func (t *Tx) OpenRun(id string) error { return t.tx.Bucket(bucketOpen).Put([]byte(id), nil) }

// CloseRun marks run r finished and adds it to the ledger (which keeps the
// newest LedgerSize runs).
func (t *Tx) CloseRun(r LedgerRun) error {
	if err := t.tx.Bucket(bucketOpen).Delete([]byte(r.RunID)); err != nil {
		return err
	}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ledger := t.tx.Bucket(bucketLedger)
	if err := ledger.Put([]byte(r.RunID), v); err != nil {
		return err
	}
	// Run ids begin with their UTC start time: key order is age order.
	for over := ledger.Stats().KeyN - LedgerSize; over > 0; over-- {
		if k, _ := ledger.Cursor().First(); k != nil {
			if err := ledger.Delete(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// Ledger returns the recent finished runs, oldest first.
func (t *Tx) Ledger() ([]LedgerRun, error) { return readLedger(t.tx) }

// NextEvent returns the next number of the tool events' sequence,
// "<epoch>-<n>": n counts up (durably: never given twice) and epoch is
// when the outbox file was made (a new file starts again at 1 but with
// another epoch).
func (t *Tx) NextEvent() (string, error) {
	meta := t.tx.Bucket(bucketMeta)
	var cur uint64
	if v := meta.Get([]byte("events")); len(v) == 8 {
		cur = binary.BigEndian.Uint64(v)
	}
	cur++
	return fmt.Sprintf("%s-%d", meta.Get([]byte("epoch")), cur), meta.Put([]byte("events"), seqKey(cur))
}

// Peek returns up to n of the oldest messages, oldest first.
func (o *Outbox) Peek(n int) ([]Entry, error) {
	var out []Entry
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMsgs).Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			m, err := decodeMessage(v)
			if err != nil {
				return fmt.Errorf("entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, Entry{Seq: binary.BigEndian.Uint64(k), Message: m})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("publish: outbox: %w", err)
	}
	return out, nil
}

// Delete removes the messages with these sequence numbers (the broker
// acknowledged them). Missing ones (dropped meanwhile) are skipped.
func (o *Outbox) Delete(seqs []uint64) error {
	var dn int
	var dbytes int64
	err := o.db.Update(func(tx *bolt.Tx) error {
		msgs := tx.Bucket(bucketMsgs)
		for _, s := range seqs {
			k := seqKey(s)
			v := msgs.Get(k)
			if v == nil {
				continue
			}
			dn++
			dbytes += int64(len(v))
			if err := msgs.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("publish: outbox: delete: %w", err)
	}
	o.mu.Lock()
	o.n -= dn
	o.bytes -= dbytes
	o.mu.Unlock()
	return nil
}

// OpenRuns returns the runs whose start was appended and whose record was
// not, in id order.
func (o *Outbox) OpenRuns() ([]string, error) {
	var ids []string
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOpen).ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("publish: outbox: %w", err)
	}
	return ids, nil
}

// Ledger returns the recent finished runs, oldest first.
func (o *Outbox) Ledger() ([]LedgerRun, error) {
	var runs []LedgerRun
	err := o.db.View(func(tx *bolt.Tx) error {
		var err error
		runs, err = readLedger(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("publish: outbox: ledger: %w", err)
	}
	return runs, nil
}

func readLedger(tx *bolt.Tx) ([]LedgerRun, error) {
	var runs []LedgerRun
	err := tx.Bucket(bucketLedger).ForEach(func(_, v []byte) error {
		var r LedgerRun
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		runs = append(runs, r)
		return nil
	})
	return runs, err
}

func seqKey(s uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, s)
	return k
}

// encodeMessage: one flags byte (1: retain), the topic's length as a
// uvarint, the topic, the payload.
func encodeMessage(m Message) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen32+len(m.Topic)+len(m.Payload))
	var flags byte
	if m.Retain {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(m.Topic)))
	b = append(b, m.Topic...)
	return append(b, m.Payload...)
}

func decodeMessage(v []byte) (Message, error) {
	if len(v) < 2 {
		return Message{}, errors.New("truncated")
	}
	flags := v[0]
	n, w := binary.Uvarint(v[1:])
	if w <= 0 || uint64(len(v)-1-w) < n {
		return Message{}, errors.New("bad topic length")
	}
	rest := v[1+w:]
	return Message{
		Topic:   string(rest[:n]),
		Retain:  flags&1 != 0,
		Payload: bytes.Clone(rest[n:]),
	}, nil
}
