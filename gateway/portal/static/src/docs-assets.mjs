// Copies the API docs' browser assets (Swagger UI for /docs, ReDoc for /redoc) from node_modules into
// gateway/portal/static/vendor/ with their licences, so the docs pages load nothing from a CDN and work with no
// internet. Run at install by `npm run build:portal` (scripts/_bootstrap.sh).
import { copyFileSync, existsSync, mkdirSync } from "node:fs";

const OUT = "gateway/portal/static/vendor";
const FILES = [
  ["swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui-bundle.js"],
  ["swagger-ui-dist/swagger-ui-bundle.js.LICENSE.txt", "swagger-ui-bundle.js.LICENSE.txt"],
  ["swagger-ui-dist/swagger-ui.css", "swagger-ui.css"],
  ["swagger-ui-dist/LICENSE", "swagger-ui.LICENSE.txt"],
  ["swagger-ui-dist/NOTICE", "swagger-ui.NOTICE.txt"],
  ["redoc/bundles/redoc.standalone.js", "redoc.standalone.js"],
  ["redoc/bundles/redoc.standalone.js.LICENSE.txt", "redoc.standalone.js.LICENSE.txt"],
  ["redoc/LICENSE", "redoc.LICENSE.txt"],
];

mkdirSync(OUT, { recursive: true });
for (const [from, to] of FILES) {
  const src = `node_modules/${from}`;
  if (!existsSync(src)) throw new Error(`${src} is missing: run npm ci`);
  copyFileSync(src, `${OUT}/${to}`);
}
