package hcl.fhirvalidator;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

/**
 * FHIR R4 conformance check of many files in one JVM (start-up is ~5 s, a resource 20-100 ms).
 *
 * <p>{@code java -jar fhir-validator.jar PATH...} validates files (directories: their *.json, recursively) and
 * prints one JSON summary. {@code --serve} reads one path a line on stdin and answers one JSON line each (for a
 * directory: its summary), so a test session keeps one JVM. Exit code: 0 when no file has an error, 1 otherwise, 2 on bad usage.
 */
public final class Main {
  private final FhirValidator validator;

  private Main() {
    FhirContext ctx = FhirContext.forR4();
    ValidationSupportChain chain =
        new ValidationSupportChain(
            new DefaultProfileValidationSupport(ctx),
            new InMemoryTerminologyServerValidationSupport(ctx),
            new CommonCodeSystemsTerminologyService(ctx),
            new SnapshotGeneratingValidationSupport(ctx));
    validator = ctx.newValidator();
    validator.registerValidatorModule(new FhirInstanceValidator(chain));
  }

  public static void main(String[] args) throws IOException {
    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    if (args.length == 0) {
      System.err.println("usage: fhir-validator PATH... | fhir-validator --serve");
      System.exit(2);
    }
    Main main = new Main();
    if (args[0].equals("--serve")) {
      main.serve(out);
      return;
    }
    List<Path> files = new ArrayList<>();
    for (String arg : args) {
      files.addAll(expand(Path.of(arg)));
    }
    Report summary = main.summary(files, "\n");
    out.println(summary.json);
    System.exit(summary.errors == 0 ? 0 : 1);
  }

  /** One path a line in, one JSON line out, until stdin closes. */
  private void serve(PrintStream out) throws IOException {
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    out.println("{\"ready\":true}");
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      if (line.isBlank()) {
        continue;
      }
      Path path = Path.of(line.strip());
      out.println(Files.isDirectory(path) ? summary(expand(path), "").json : fileReport(path).json);
    }
  }

  /** The summary of many files; {@code newline} separates the results (none on the --serve protocol). */
  private Report summary(List<Path> files, String newline) {
    int errors = 0;
    int warnings = 0;
    int failed = 0;
    StringBuilder body = new StringBuilder();
    for (Path file : files) {
      Report report = fileReport(file);
      errors += report.errors;
      warnings += report.warnings;
      failed += report.errors > 0 ? 1 : 0;
      body.append(body.length() == 0 ? "" : ",").append(newline).append(report.json);
    }
    String json =
        String.format(
            "{\"files\":%d,\"failed\":%d,\"errors\":%d,\"warnings\":%d,\"results\":[%s%s]}",
            files.size(), failed, errors, warnings, body, newline);
    return new Report(failed, warnings, json); // a summary's "errors" count the files that failed
  }

  private static List<Path> expand(Path path) throws IOException {
    if (!Files.isDirectory(path)) {
      return List.of(path);
    }
    try (Stream<Path> walk = Files.walk(path)) {
      return walk.filter(p -> p.toString().endsWith(".json")).sorted().toList();
    }
  }

  /** A file's verdict: errors (error and fatal) and warnings, each with its location and message. */
  private Report fileReport(Path file) {
    List<SingleValidationMessage> messages;
    try {
      ValidationResult result = validator.validateWithResult(Files.readString(file, StandardCharsets.UTF_8));
      messages = result.getMessages();
    } catch (Exception e) {
      SingleValidationMessage m = new SingleValidationMessage();
      m.setSeverity(ca.uhn.fhir.validation.ResultSeverityEnum.FATAL);
      m.setLocationString("(file)");
      m.setMessage(e.getClass().getSimpleName() + ": " + e.getMessage());
      messages = List.of(m);
    }
    return Report.of(file, messages);
  }

  private record Report(int errors, int warnings, String json) {
    static Report of(Path file, List<SingleValidationMessage> messages) {
      List<String> errors = new ArrayList<>();
      List<String> warnings = new ArrayList<>();
      for (SingleValidationMessage m : messages) {
        switch (m.getSeverity()) {
          case ERROR, FATAL -> errors.add(issue(m));
          case WARNING -> warnings.add(issue(m));
          default -> { }
        }
      }
      String json =
          String.format(
              "{\"file\":%s,\"errors\":[%s],\"warnings\":[%s]}",
              quote(file.toString()), String.join(",", errors), String.join(",", warnings));
      return new Report(errors.size(), warnings.size(), json);
    }
  }

  private static String issue(SingleValidationMessage m) {
    return String.format(
        "{\"location\":%s,\"line\":%s,\"message\":%s,\"id\":%s}",
        quote(m.getLocationString()),
        m.getLocationLine() == null ? "null" : m.getLocationLine().toString(),
        quote(m.getMessage()),
        quote(m.getMessageId()));
  }

  private static String quote(String s) {
    if (s == null) {
      return "null";
    }
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      switch (c) {
        case '"' -> b.append("\\\"");
        case '\\' -> b.append("\\\\");
        case '\n' -> b.append("\\n");
        case '\r' -> b.append("\\r");
        case '\t' -> b.append("\\t");
        default -> {
          if (c < 0x20) {
            b.append(String.format("\\u%04x", (int) c));
          } else {
            b.append(c);
          }
        }
      }
    }
    return b.append('"').toString();
  }
}
