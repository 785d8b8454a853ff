package results

import (
	"errors"
	"fmt"
	"image"
	"image/draw"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Recorder records one run. Its methods are safe for concurrent use: the
// runner may save site N while it already works on site N+1, and SaveSite
// calls for different sites run their (expensive) image and defect-list
// writes in parallel. SaveSite rewrites run.json before it returns unless it was rewritten less than the store's commit interval ago
// (WithCommitInterval, default 1 s): on a run of thousands of sites a
// rewrite per site would write the whole record thousands of times, and the
// site files are the durable truth (Store.MarkInterrupted recovers the sites
// a crash kept out of run.json from them). FailSite, Flush, FinishRecord and
// Finish always rewrite it; concurrent changes share one rewrite.
//
// The in-memory record is the truth: when rewriting run.json fails (full
// disk), the method returns the error but keeps the change, and the next
// successful rewrite (any later SaveSite, FailSite, Flush or Finish) records
// it. Run returns the in-memory record.
type Recorder struct {
	store *Store
	id    string // == run.ID, fixed after Create
	dir   string

	finishMu sync.Mutex // serialises Finish

	mu        sync.Mutex
	run       Run
	pos       map[int]int  // site index -> position in run.Sites
	busy      map[int]bool // sites being saved
	version   uint64       // incremented by every change to run
	finishing bool         // Finish called: no more changes to sites
	outcome   Run          // Finish's outcome, applied once saves in flight returned
	applied   bool         // outcome applied to run
	persisted bool         // Finish succeeded: further calls are no-ops
	inflight  sync.WaitGroup

	writeMu   sync.Mutex // serialises run.json writes; taken before mu
	written   uint64     // version last written to run.json; guarded by writeMu
	writtenAt time.Time  // when; guarded by writeMu
}

// ID returns the run ID (the directory name).
func (r *Recorder) ID() string { return r.id }

// Dir returns the run directory.
func (r *Recorder) Dir() string { return r.dir }

// Run returns a copy of the current record.
func (r *Recorder) Run() Run {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.run.clone()
}

// SaveSite records the result of site index: it writes the image (if img is
// not nil) as an 8-bit grey PNG to sites/NNNN.png, then the defect list to
// sites/NNNN.json, marks the site done, updates the counters and rewrites
// run.json unless it was rewritten less than the commit interval ago.
// img and defects are not retained after SaveSite returns, so a pooled
// frame may be released then; non-Gray images are converted to grey.
//
// SaveSite fails for an unknown index, a site already done or being saved,
// and after Finish (ErrFinished). If writing the site files fails the site
// is left as it was. It blocks on disk I/O.
func (r *Recorder) SaveSite(index int, defects []Defect, img image.Image) error {
	r.mu.Lock()
	p, err := r.claimLocked(index, "save")
	if err != nil {
		r.mu.Unlock()
		return err
	}
	site := r.run.Sites[p]
	r.busy[index] = true
	r.inflight.Add(1)
	r.mu.Unlock()
	defer r.inflight.Done()

	res := SiteResult{RunID: r.id, Index: index, Die: site.Die, XMM: site.XMM, YMM: site.YMM, Defects: defects}
	if res.Defects == nil {
		res.Defects = []Defect{}
	}
	resRel, imgRel := siteRel(index, ".json"), siteRel(index, ".png")
	if img == nil {
		imgRel = ""
	}
	err = r.writeSite(resRel, imgRel, &res, img)

	r.mu.Lock()
	delete(r.busy, index)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	st := &r.run.Sites[p]
	st.Status, st.Defects, st.Result, st.Image, st.Error = SiteDone, len(defects), resRel, imgRel, ""
	ver := r.changedLocked()
	r.mu.Unlock()
	return r.commitSoon(ver)
}

// writeSite writes the image of a site (unless imgRel is empty) and then
// its defect list, to the paths given relative to the run directory.
func (r *Recorder) writeSite(resRel, imgRel string, res *SiteResult, img image.Image) error {
	if imgRel != "" {
		g := toGray(img)
		if err := r.store.writeFile(r.path(imgRel), func(w io.Writer) error {
			return encodeGrayPNG(w, g)
		}); err != nil {
			return err
		}
	}
	b, err := marshalRecord(res)
	if err == nil {
		err = r.store.writeBytes(r.path(resRel), b)
	} else {
		err = fmt.Errorf("results: encode %s: %w", r.path(resRel), err)
	}
	if err != nil && imgRel != "" {
		// No image without its defect list: the site stays pending.
		_ = os.Remove(r.path(imgRel))
	}
	return err
}

// FailSite marks site index failed with err's text and rewrites run.json.
// It fails for an unknown index, a site already done or being saved, and
// after Finish (ErrFinished). Failing a failed site again replaces the
// message.
func (r *Recorder) FailSite(index int, err error) error {
	r.mu.Lock()
	p, cerr := r.claimLocked(index, "fail")
	if cerr != nil {
		r.mu.Unlock()
		return cerr
	}
	st := &r.run.Sites[p]
	st.Status, st.Defects, st.Result, st.Image = SiteFailed, 0, "", ""
	st.Error = "unknown error"
	if err != nil {
		st.Error = err.Error()
	}
	ver := r.changedLocked()
	r.mu.Unlock()
	return r.commit(ver) // rare, and not recoverable from site files
}

// claimLocked checks that site index may be changed now and returns its
// position in run.Sites.
func (r *Recorder) claimLocked(index int, op string) (int, error) {
	if r.finishing {
		return 0, fmt.Errorf("results: run %s: %s site %d: %w", r.id, op, index, ErrFinished)
	}
	p, ok := r.pos[index]
	if !ok {
		return 0, fmt.Errorf("results: run %s: %s site %d: no such site", r.id, op, index)
	}
	if r.busy[index] {
		return 0, fmt.Errorf("results: run %s: %s site %d: site is being saved", r.id, op, index)
	}
	if r.run.Sites[p].Status == SiteDone {
		return 0, fmt.Errorf("results: run %s: %s site %d: site already saved", r.id, op, index)
	}
	return p, nil
}

// Flush rewrites run.json if the last rewrite failed. It is a cheap no-op
// otherwise.
func (r *Recorder) Flush() error {
	r.mu.Lock()
	ver := r.version
	r.mu.Unlock()
	return r.commit(ver)
}

// Finish ends the run: FinishRecord, then WriteMap.
//
// Once Finish has succeeded, later calls are no-ops returning nil. If
// writing failed, a later call retries the writes with the outcome of the
// first call (its arguments are ignored), so the safe-stop sequence may
// simply call Finish again.
func (r *Recorder) Finish(state State, reason string, runErr error, positionTrusted bool) error {
	if err := r.FinishRecord(state, reason, runErr, positionTrusted); err != nil {
		return errors.Join(err, r.WriteMap())
	}
	return r.WriteMap()
}

// FinishRecord persists the outcome: it records state, reason, runErr's
// text and whether the stage position is still trusted, sets ended_at to
// now and complete to (state == Completed and every site done), and writes
// run.json, the commit point. It first waits for SaveSite calls in progress
// to return, and makes later SaveSite and FailSite calls fail with
// ErrFinished. The wafer map is WriteMap's.
//
// state must be final (not Running). Retries after a failed write keep the
// outcome of the first call (its arguments are ignored); after success it
// is a no-op.
func (r *Recorder) FinishRecord(state State, reason string, runErr error, positionTrusted bool) error {
	r.finishMu.Lock()
	defer r.finishMu.Unlock()

	r.mu.Lock()
	if r.persisted {
		r.mu.Unlock()
		return nil
	}
	if !r.finishing {
		if !state.Final() {
			r.mu.Unlock()
			return fmt.Errorf("results: run %s: finish: %q is not a final state", r.id, state)
		}
		r.finishing = true
		t := r.store.now().UTC()
		r.outcome = Run{State: state, Reason: reason, EndedAt: &t, PositionTrusted: positionTrusted}
		if runErr != nil {
			r.outcome.Error = runErr.Error()
		}
	}
	r.mu.Unlock()

	// No new saves can start (finishing is set); let those in flight land
	// before the outcome becomes visible, so run.json never says finished
	// while sites are still being added.
	r.inflight.Wait()

	r.mu.Lock()
	if !r.applied {
		o := r.outcome
		r.run.State, r.run.Reason, r.run.Error, r.run.EndedAt, r.run.PositionTrusted = o.State, o.Reason, o.Error, o.EndedAt, o.PositionTrusted
		r.run.recount()
		r.run.Complete = r.run.State == Completed && r.run.SitesDone == r.run.SitesTotal
		r.changedLocked()
		r.applied = true
	}
	ver := r.version
	r.mu.Unlock()
	// The space reserved at Create goes to the final record: on a full
	// disk, this write is the one that must succeed.
	_ = os.Remove(r.path(reserveName))
	// run.json is the commit point: the outcome is persisted without
	// waiting for the map (a picture derived from it).
	if err := r.commit(ver); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(r.store.dir, runningDir, r.id))
	return nil
}

// WriteMap draws wafermap.png from the finished record and, once it and
// run.json are written, releases the run (Finish's no-op from then on). It
// fails if FinishRecord has not been called.
func (r *Recorder) WriteMap() error {
	r.finishMu.Lock()
	defer r.finishMu.Unlock()
	r.mu.Lock()
	if r.persisted {
		r.mu.Unlock()
		return nil
	}
	if !r.applied {
		r.mu.Unlock()
		return fmt.Errorf("results: run %s: wafer map before the outcome is recorded", r.id)
	}
	snap := r.run.clone()
	ver := r.version
	r.mu.Unlock()
	if err := r.store.writeWaferMap(r.dir, snap); err != nil {
		return err
	}
	if err := r.commit(ver); err != nil {
		return err
	}
	r.mu.Lock()
	r.persisted = true
	r.mu.Unlock()
	r.store.mu.Lock()
	delete(r.store.active, r.id)
	r.store.mu.Unlock()
	return nil
}

// changedLocked recounts after a change and returns the new version.
func (r *Recorder) changedLocked() uint64 {
	r.run.recount()
	r.version++
	return r.version
}

// commitSoon commits ver unless run.json was rewritten less than the
// store's commit interval ago (the next change, Flush or Finish will).
func (r *Recorder) commitSoon(ver uint64) error {
	if iv := r.store.commitEvery; iv > 0 {
		r.writeMu.Lock()
		recent := r.written > 0 && time.Since(r.writtenAt) < iv
		r.writeMu.Unlock()
		if recent {
			return nil
		}
	}
	return r.commit(ver)
}

// commit makes sure run.json holds version ver or later. Concurrent callers
// share one write: the first to get writeMu writes the latest version.
func (r *Recorder) commit(ver uint64) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	if r.written >= ver {
		return nil
	}
	r.mu.Lock()
	snap := r.run.clone()
	latest := r.version
	r.mu.Unlock()
	// Encoded outside mu: SaveSite calls go on meanwhile.
	b, err := marshalRecord(&snap)
	if err != nil {
		return fmt.Errorf("results: encode %s: %w", r.path("run.json"), err)
	}
	if err := r.store.writeBytes(r.path("run.json"), b); err != nil {
		return err
	}
	r.written, r.writtenAt = latest, time.Now()
	return nil
}

func (r *Recorder) path(rel string) string { return filepath.Join(r.dir, filepath.FromSlash(rel)) }

// toGray returns img as *image.Gray, converting when needed.
func toGray(img image.Image) *image.Gray {
	if g, ok := img.(*image.Gray); ok {
		return g
	}
	b := img.Bounds()
	g := image.NewGray(b)
	draw.Draw(g, b, img, b.Min, draw.Src)
	return g
}
