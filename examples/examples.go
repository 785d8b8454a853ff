// Package examples holds the example recipes shipped with waferd, built
// into the binary so that the simulated board can run them out of the box
// (`run demo` on the console) wherever the daemon is started.
package examples

import "embed"

// Recipes holds recipes/*.toml (for example recipes/demo.toml).
//
//go:embed recipes/*.toml
var Recipes embed.FS

// RecipeDir is the directory of the recipes inside Recipes.
const RecipeDir = "recipes"
