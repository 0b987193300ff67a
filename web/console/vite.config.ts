import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

// The build lands in internal/httpface/dist, which the Go binary embeds. File names
// carry content hashes only, so identical sources give identical output.
export default defineConfig({
  base: "/",
  resolve: {
    alias: { "@gen": here("../../gen/ts") },
    // gen/ts lives outside this package: resolve its runtime imports from here.
    dedupe: ["@bufbuild/protobuf"],
  },
  worker: { format: "es" },
  build: {
    outDir: here("../../internal/httpface/dist"),
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    reportCompressedSize: false,
    modulePreload: { polyfill: false },
  },
});
