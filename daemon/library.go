package daemon

// Recipes, run records, logs and the configuration, for the consoles.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/atomicfile"
	"github.com/waferd/waferd/internal/tomlfile"
)

// checkRecipeName refuses names with a path separator or "..", and hidden
// files.
func (d *Daemon) checkRecipeName(name string) error {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.Contains(name, "..") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("daemon: bad recipe name %q: give a name from %s, without / or ..", name, d.opts.Config.Data.Recipes)
	}
	return nil
}

// LoadRecipe loads the recipe called name: <recipes>/<name>.toml, or the
// built-in example of that name when the recipe directory does not exist
// (Options.Recipes). Names with a path separator or ".." are refused.
func (d *Daemon) LoadRecipe(name string) (*recipe.Recipe, error) {
	if err := d.checkRecipeName(name); err != nil {
		return nil, err
	}
	dir := d.opts.Config.Data.Recipes
	file := strings.TrimSuffix(name, ".toml") + ".toml"
	p := filepath.Join(dir, file)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) && d.opts.Recipes != nil {
		return d.builtinRecipe(file)
	}
	if _, err := os.Stat(p); err != nil {
		return nil, fmt.Errorf("daemon: recipe %q: %w", name, err)
	}
	return recipe.Load(p, d.opts.Devices.Limits)
}

// RecipeText returns the text of the recipe LoadRecipe would load for name
// (the file, or the built-in example), unparsed.
func (d *Daemon) RecipeText(name string) ([]byte, error) {
	if err := d.checkRecipeName(name); err != nil {
		return nil, err
	}
	dir := d.opts.Config.Data.Recipes
	file := strings.TrimSuffix(name, ".toml") + ".toml"
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) && d.opts.Recipes != nil {
		data, err := fs.ReadFile(d.opts.Recipes, file)
		if err != nil {
			return nil, fmt.Errorf("daemon: recipe %q: not among the built-in examples (%s)", strings.TrimSuffix(file, ".toml"), strings.Join(d.builtinNames(), ", "))
		}
		return data, nil
	}
	data, err := tomlfile.ReadFile(filepath.Join(dir, file)) // bounded, regular files only
	if err != nil {
		return nil, fmt.Errorf("daemon: recipe %q: %w", name, err)
	}
	return data, nil
}

// SaveRecipe stores text as the recipe called name, <recipes>/<name>.toml,
// replacing any recipe of that name. The text is validated completely
// first, against this machine's limits, exactly as a run would load it;
// an invalid recipe is refused with every problem (file, line, key) and
// nothing is written. The file is replaced atomically (temporary file,
// fsync, rename): a failed write leaves the old recipe as it was. The
// recipe directory must exist: while it does not, the simulated board runs
// its built-in examples, which an upload would otherwise hide. created
// reports that no recipe of that name existed. It is safe for concurrent
// use; a run already started keeps the recipe it loaded.
func (d *Daemon) SaveRecipe(name string, text []byte) (created bool, err error) {
	if err := d.checkRecipeName(name); err != nil {
		return false, err
	}
	name = strings.TrimSuffix(name, ".toml")
	if len(text) > control.MaxRecipeBytes {
		return false, fmt.Errorf("daemon: recipe %q: %d bytes, more than the %d a recipe may have", name, len(text), control.MaxRecipeBytes)
	}
	dir := d.opts.Config.Data.Recipes
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return false, fmt.Errorf("daemon: recipe %q: recipe directory %s (data.recipes) does not exist: create it first", name, dir)
	}
	if _, err := recipe.Parse(name+".toml", text, d.opts.Devices.Limits); err != nil {
		return false, fmt.Errorf("daemon: recipe %q refused: %w", name, err)
	}
	p := filepath.Join(dir, name+".toml")
	_, statErr := os.Stat(p)
	if err := atomicfile.Write(p, text, 0o644); err != nil {
		return false, fmt.Errorf("daemon: recipe %q: %w", name, err)
	}
	d.log.Noticef("recipe %s stored (%d bytes)", p, len(text))
	return errors.Is(statErr, fs.ErrNotExist), nil
}

// builtinRecipe loads file from Options.Recipes.
func (d *Daemon) builtinRecipe(file string) (*recipe.Recipe, error) {
	data, err := fs.ReadFile(d.opts.Recipes, file)
	if err != nil {
		return nil, fmt.Errorf("daemon: recipe %q: not among the built-in examples (%s)", strings.TrimSuffix(file, ".toml"), strings.Join(d.builtinNames(), ", "))
	}
	return recipe.Parse("built-in "+file, data, d.opts.Devices.Limits)
}

func (d *Daemon) builtinNames() []string {
	var names []string
	matches, _ := fs.Glob(d.opts.Recipes, "*.toml")
	for _, m := range matches {
		names = append(names, strings.TrimSuffix(path.Base(m), ".toml"))
	}
	return names
}

// Recipes lists the recipe names a console can run, and where they come
// from (the recipe directory, or the built-in examples).
func (d *Daemon) Recipes() (names []string, from string, err error) {
	dir := d.opts.Config.Data.Recipes
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) && d.opts.Recipes != nil {
		return d.builtinNames(), "built-in examples (" + dir + " does not exist)", nil
	}
	matches, err := filepath.Glob(filepath.Join(dir, "*.toml"))
	if err != nil {
		return nil, dir, fmt.Errorf("daemon: recipes: %w", err)
	}
	for _, m := range matches {
		names = append(names, strings.TrimSuffix(filepath.Base(m), ".toml"))
	}
	return names, dir, nil
}

// Runs returns up to n recorded runs (all if n ≤ 0), newest first, and an
// error for run records it could not read.
func (d *Daemon) Runs(n int) ([]results.Run, error) {
	runs, err := d.opts.Store.List()
	if n > 0 && len(runs) > n {
		runs = runs[:n]
	}
	return runs, err
}

// LoadRun reads the record of run id.
func (d *Daemon) LoadRun(id string) (results.Run, error) { return d.opts.Store.Load(id) }

// Logs returns up to the last n log lines (nil without a log ring).
func (d *Daemon) Logs(n int) []string {
	if d.opts.LogRing == nil {
		return nil
	}
	return d.opts.LogRing.Lines(n)
}

// ConfigText is the effective configuration as TOML.
func (d *Daemon) ConfigText() (string, error) {
	b, err := toml.Marshal(d.opts.Config)
	if err != nil {
		return "", fmt.Errorf("daemon: config: %w", err)
	}
	return string(b), nil
}

// DataDir is where results and captures go.
func (d *Daemon) DataDir() string { return d.opts.Config.Data.Dir }
