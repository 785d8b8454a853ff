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

	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
)

// LoadRecipe loads the recipe called name: <recipes>/<name>.toml, or the
// built-in example of that name when the recipe directory does not exist
// (Options.Recipes). Names with a path separator or ".." are refused.
func (d *Daemon) LoadRecipe(name string) (*recipe.Recipe, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.Contains(name, "..") || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("daemon: bad recipe name %q: give a name from %s, without / or ..", name, d.opts.Config.Data.Recipes)
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
