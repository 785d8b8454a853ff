package results

import (
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"io"
)

// encodeGrayPNG writes g to w as a PNG: the site images. It is about seven
// times faster than image/png at BestSpeed on a 2048×2048 camera frame, and
// no larger (BenchmarkSiteImagePNG). image/png tries all five row
// filters on every row and then runs LZ77; camera frames are noise on a
// smooth pattern, where LZ77 finds little, so this encoder uses the Up
// filter (each row minus the one above) and Huffman coding only
// (zlib.HuffmanOnly). The output is a standard PNG that any decoder reads.
//
// Each call allocates its own encoder state (well under 1 MB, against a
// 4 MiB frame); it is safe for concurrent use and blocks on w.
func encodeGrayPNG(w io.Writer, g *image.Gray) error {
	b := g.Bounds()
	width, height := b.Dx(), b.Dy()
	if width <= 0 || height <= 0 || uint64(width) > 1<<31-1 || uint64(height) > 1<<31-1 {
		return fmt.Errorf("png: invalid image size %dx%d", width, height)
	}
	idat := &idatWriter{w: w, buf: make([]byte, idatSize)}
	zw, _ := zlib.NewWriterLevel(idat, zlib.HuffmanOnly) // a valid level: no error
	// The filter byte and the filtered row.
	row := make([]byte, width+1)

	// Signature and IHDR: 8-bit greyscale, deflate, adaptive filtering
	// method 0, no interlace.
	if _, err := w.Write(pngSignature[:]); err != nil {
		return err
	}
	var ihdr [13]byte
	binary.BigEndian.PutUint32(ihdr[0:], uint32(width))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(height))
	ihdr[8] = 8 // bit depth
	if err := idat.writeChunk("IHDR", ihdr[:]); err != nil {
		return err
	}

	for y := 0; y < height; y++ {
		cur := g.Pix[g.PixOffset(b.Min.X, b.Min.Y+y):][:width]
		if y == 0 {
			row[0] = 0 // None
			copy(row[1:], cur)
		} else {
			row[0] = 2 // Up
			upFilter(row[1:], cur, g.Pix[g.PixOffset(b.Min.X, b.Min.Y+y-1):][:width])
		}
		if _, err := zw.Write(row); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := idat.flush(); err != nil {
		return err
	}
	return idat.writeChunk("IEND", nil)
}

// idatWriter collects the zlib stream into IDAT chunks of up to len(buf)
// bytes.
type idatWriter struct {
	w       io.Writer
	buf     []byte
	n       int
	err     error
	scratch [12]byte // a chunk's header or CRC
}

const idatSize = 64 << 10

var pngSignature = [8]byte{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}

// upFilter sets dst[i] = cur[i] - prev[i] (mod 256), eight bytes at a time.
func upFilter(dst, cur, prev []byte) {
	n := len(cur)
	dst, prev = dst[:n], prev[:n]
	i := 0
	for ; i+8 <= n; i += 8 {
		a := binary.LittleEndian.Uint64(cur[i:])
		p := binary.LittleEndian.Uint64(prev[i:])
		// Lane-wise a-p without borrows crossing bytes: subtract with
		// the high bits set in a and cleared in p, then fix the high bits.
		const hi = 0x8080808080808080
		d := ((a | hi) - (p &^ hi)) ^ ((a ^ ^p) & hi)
		binary.LittleEndian.PutUint64(dst[i:], d)
	}
	for ; i < n; i++ {
		dst[i] = cur[i] - prev[i]
	}
}

func (iw *idatWriter) Write(p []byte) (int, error) {
	if iw.err != nil {
		return 0, iw.err
	}
	total := len(p)
	for len(p) > 0 {
		k := copy(iw.buf[iw.n:], p)
		iw.n += k
		p = p[k:]
		if iw.n == len(iw.buf) {
			if err := iw.flush(); err != nil {
				return total - len(p), err
			}
		}
	}
	return total, nil
}

func (iw *idatWriter) flush() error {
	if iw.err != nil || iw.n == 0 {
		return iw.err
	}
	iw.err = iw.writeChunk("IDAT", iw.buf[:iw.n])
	iw.n = 0
	return iw.err
}

// writeChunk writes one PNG chunk to iw.w: length, type, data, CRC.
func (iw *idatWriter) writeChunk(typ string, data []byte) error {
	if len(typ) != 4 {
		return errors.New("png: chunk type must be 4 bytes")
	}
	hdr := binary.BigEndian.AppendUint32(iw.scratch[:0], uint32(len(data)))
	hdr = append(hdr, typ...)
	crc := crc32.Update(crc32.ChecksumIEEE(hdr[4:8]), crc32.IEEETable, data)
	if _, err := iw.w.Write(hdr); err != nil {
		return err
	}
	if len(data) > 0 {
		if _, err := iw.w.Write(data); err != nil {
			return err
		}
	}
	_, err := iw.w.Write(binary.BigEndian.AppendUint32(iw.scratch[:0], crc))
	return err
}
