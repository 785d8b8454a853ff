package results

import (
	"fmt"
	"sync"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
)

// mapFaces are the wafer map's type faces, the Go fonts (golang.org/x/image,
// BSD licence) at fixed pixel sizes. A set belongs to one rendering: faces
// are not safe for concurrent use.
type mapFaces struct {
	title, bold, regular, small, count font.Face
	smallAscent, smallHeight           int // pixels
}

// goFonts parses the embedded Go fonts once; parsed fonts are safe for
// concurrent use (each Face has its own buffer).
var goFonts = sync.OnceValues(func() ([2]*opentype.Font, error) {
	var fs [2]*opentype.Font
	for i, ttf := range [][]byte{goregular.TTF, gobold.TTF} {
		f, err := opentype.Parse(ttf)
		if err != nil {
			return fs, fmt.Errorf("parse the Go fonts: %w", err)
		}
		fs[i] = f
	}
	return fs, nil
})

// newMapFaces returns a fresh set of faces: title 20 px bold, text 14 px
// regular and bold, small 12 px (axes, the mark's label), count 12 px bold
// (defects in a die).
func newMapFaces() (mapFaces, error) {
	fs, err := goFonts()
	if err != nil {
		return mapFaces{}, err
	}
	face := func(f *opentype.Font, px float64) (font.Face, error) {
		return opentype.NewFace(f, &opentype.FaceOptions{Size: px, DPI: 72, Hinting: font.HintingFull})
	}
	var m mapFaces
	for _, x := range []struct {
		dst *font.Face
		f   *opentype.Font
		px  float64
	}{{&m.title, fs[1], 20}, {&m.bold, fs[1], 14}, {&m.regular, fs[0], 14}, {&m.small, fs[0], 12}, {&m.count, fs[1], 12}} {
		if *x.dst, err = face(x.f, x.px); err != nil {
			return mapFaces{}, fmt.Errorf("wafer map face of %g px: %w", x.px, err)
		}
	}
	sm := m.small.Metrics()
	m.smallAscent = sm.Ascent.Ceil()
	m.smallHeight = sm.Ascent.Ceil() + sm.Descent.Ceil()
	return m, nil
}
